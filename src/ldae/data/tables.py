"""Reading and writing the workflow's TSV tables (session table, exclusions, splits).

Every later stage finds its sessions through these functions, never by globbing folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

SESSION_COLUMNS = ["participant_id", "session_id", "months", "age", "sex", "diagnosis", "t1w"]
EXCLUSION_COLUMNS = ["participant_id", "session_id", "stage", "reason", "path"]
SPLIT_COLUMNS = ["participant_id", "baseline_diagnosis", "n_sessions", "split", "probe_split"]
SPLITS = ("train", "val", "test")


class TableError(ValueError):
    """A table is missing, malformed or inconsistent; the message names the file and the fix."""


def write_tsv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a TSV through a temporary file in the same folder, so readers never see half a table."""
    from ldae.files import write_tsv

    write_tsv(frame, path)


def read_tsv(path: str | os.PathLike, required: list[str], what: str) -> pd.DataFrame:
    """Read a TSV and check its columns; errors name the file, the missing columns and what makes it."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{what} not found: {path}")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a", ""])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing} in the {what}; found {list(frame.columns)}")
    return frame


def read_sessions(path: str | os.PathLike) -> pd.DataFrame:
    frame = read_tsv(path, SESSION_COLUMNS, "session table (rule `sessions`)")
    frame["months"] = frame["months"].astype(int)
    frame["age"] = frame["age"].astype(float)
    return frame


def read_splits(path: str | os.PathLike) -> pd.DataFrame:
    frame = read_tsv(path, SPLIT_COLUMNS, "split table (rule `splits`)")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise TableError(f"{path}: unknown split value(s) {bad}; expected {list(SPLITS)}")
    if frame["participant_id"].duplicated().any():
        dupes = sorted(frame.loc[frame["participant_id"].duplicated(), "participant_id"])
        raise TableError(f"{path}: subject(s) listed twice: {dupes[:5]}")
    return frame


def sessions_with_splits(sessions_path: str | os.PathLike, splits_path: str | os.PathLike) -> pd.DataFrame:
    """The session table joined with each subject's split; a subject without a split is an error."""
    sessions = read_sessions(sessions_path)
    splits = read_splits(splits_path)
    joined = sessions.merge(splits[["participant_id", "split", "probe_split"]], on="participant_id", how="left")
    unassigned = sorted(joined.loc[joined["split"].isna(), "participant_id"].unique())
    if unassigned:
        raise TableError(
            f"{splits_path}: subject(s) {unassigned[:5]} of {sessions_path} have no split; "
            "rerun rule `splits` (delete the split table only if you accept new splits)"
        )
    return joined
