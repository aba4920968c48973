"""`ldae splits`: subject-level splits, stratified by baseline diagnosis, fixed by a seed.

Paper: 90/10 train/test by subject for every stage, 1% of the training subjects held out for validation;
the linear probes split the remaining training subjects again 70/30 (probe_train/probe_val). The test
split is the fixed benchmark. A subject's order within its stratum comes from a hash of (seed, subject),
so the assignment does not depend on row order and mostly survives a cohort that grows.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from pathlib import Path

import pandas as pd

from ldae.data.tables import SPLIT_COLUMNS, TableError, read_sessions, write_tsv_atomic

log = logging.getLogger("ldae.splits")


def subject_order_key(seed: int, participant_id: str) -> str:
    return hashlib.sha256(f"{seed}:{participant_id}".encode()).hexdigest()


def allocate(stratum_sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` picks across strata in proportion to their sizes (largest remainder), never more
    than a stratum holds."""
    size_sum = sum(stratum_sizes.values())
    if size_sum == 0 or total == 0:
        return {name: 0 for name in stratum_sizes}
    exact = {name: total * size / size_sum for name, size in stratum_sizes.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return {name: min(count, stratum_sizes[name]) for name, count in counts.items()}


def take_stratified(subjects: pd.DataFrame, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(first `count` subjects, the rest), proportionally per baseline diagnosis, in hash order."""
    sizes = subjects.groupby("baseline_diagnosis").size().to_dict()
    quota = allocate(sizes, count)
    picked = [group.head(quota[name]) for name, group in subjects.groupby("baseline_diagnosis")]
    picked = pd.concat(picked) if picked else subjects.iloc[:0]
    return picked, subjects.drop(picked.index)


def subjects_of(sessions: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per subject: baseline diagnosis (diagnosis at the earliest session) and session count."""
    ordered = sessions.sort_values(["participant_id", "months"])
    subjects = ordered.groupby("participant_id").agg(
        baseline_diagnosis=("diagnosis", "first"), n_sessions=("session_id", "size")
    )
    subjects = subjects.reset_index()
    subjects["order"] = subjects.participant_id.map(lambda pid: subject_order_key(seed, pid))
    return subjects.sort_values("order").reset_index(drop=True)


def make_splits(
    sessions: pd.DataFrame,
    seed: int,
    test_fraction: float = 0.10,
    val_fraction: float = 0.01,
    probe_val_fraction: float = 0.30,
    min_val_subjects: int = 1,
) -> pd.DataFrame:
    subjects = subjects_of(sessions, seed)
    n_subjects = len(subjects)
    n_test = max(1, round(n_subjects * test_fraction))
    if n_subjects - n_test < 2:
        raise TableError(
            f"{n_subjects} subject(s) cannot be split into train and test "
            f"(splits.test_fraction={test_fraction}); the cohort needs at least 3 subjects"
        )
    test, pool = take_stratified(subjects, n_test)
    n_val = min(max(min_val_subjects, round(len(pool) * val_fraction)), len(pool) - 1)
    val, train = take_stratified(pool, n_val)
    n_probe_val = min(max(1, round(len(train) * probe_val_fraction)), len(train) - 1)
    probe_val, probe_train = take_stratified(train, n_probe_val) if len(train) > 1 else (train.iloc[:0], train)
    table = pd.concat(
        [
            test.assign(split="test", probe_split="none"),
            val.assign(split="val", probe_split="none"),
            probe_train.assign(split="train", probe_split="probe_train"),
            probe_val.assign(split="train", probe_split="probe_val"),
        ]
    )
    return table.sort_values("participant_id")[SPLIT_COLUMNS].reset_index(drop=True)


def summary(table: pd.DataFrame) -> str:
    counts = table.groupby(["split", "baseline_diagnosis"]).size().unstack(fill_value=0)
    return counts.to_string()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae splits", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-fraction", type=float, default=0.10)
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--probe-val-fraction", type=float, default=0.30)
    parser.add_argument("--min-val-subjects", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("test_fraction", "probe_val_fraction"):
        if not 0 < getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must lie in (0, 1) (config splits.{name})")
    if not 0 <= args.val_fraction < 1:
        parser.error("--val-fraction must lie in [0, 1) (config splits.val_fraction)")
    sessions = read_sessions(args.sessions)
    table = make_splits(
        sessions, args.seed, args.test_fraction, args.val_fraction, args.probe_val_fraction, args.min_val_subjects
    )
    write_tsv_atomic(table, args.out)
    log.info("subjects per split and baseline diagnosis:\n%s", summary(table))
    return 0
