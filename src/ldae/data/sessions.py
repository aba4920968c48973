"""`ldae sessions`: the session table, built from a BIDS dataset with pybids.

One row per usable T1w session: participant, session, months since baseline, age at scan, sex, diagnosis
(CN/MCI/AD), and the T1w path relative to the BIDS root. The dataset is clinica's adni-to-bids output, or any
BIDS dataset (config data.source: bids) whose columns config data.bids names (ldae.data.bids_layout). Every
session that cannot be used goes to the exclusions table with the reason; nothing is dropped silently. The
dataset is only read.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from ldae.data.bids_layout import DAYS_PER_MONTH, DIAGNOSES, Layout, value_key
from ldae.data.tables import EXCLUSION_COLUMNS, SESSION_COLUMNS, TableError, write_tsv_atomic

log = logging.getLogger("ldae.sessions")

_IMAGE_COLUMNS = ["participant_id", "session_id", "acquisition", "run", "t1w"]


def normalise_diagnosis(value, layout: Layout | None = None) -> str | None:
    """CN/MCI/AD for a raw value (ADNI's spellings always, plus config data.bids.diagnosis.values), else None."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None
    return (layout or Layout.from_config()).diagnosis_map().get(value_key(value))


def find_t1w_images(bids_dir: Path) -> pd.DataFrame:
    """Every T1w NIfTI of the dataset, indexed by pybids: participant_id, session_id, acquisition, run, t1w."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    if not (bids_dir / "dataset_description.json").is_file():
        raise TableError(f"{bids_dir / 'dataset_description.json'} not found: {bids_dir} is not a BIDS dataset")
    layout = BIDSLayout(str(bids_dir), indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    rows = []
    for image in layout.get(suffix="T1w", datatype="anat", extension=[".nii.gz", ".nii"]):
        entities = image.get_entities()
        rows.append({
            "participant_id": f"sub-{entities['subject']}",
            "session_id": f"ses-{entities['session']}" if "session" in entities else "",
            "acquisition": str(entities.get("acquisition", "")),
            "run": int(entities["run"]) if "run" in entities else None,
            "t1w": Path(image.path).relative_to(bids_dir.resolve()).as_posix(),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=_IMAGE_COLUMNS)


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a", ""])


def read_clinical(bids_dir: Path, layout: Layout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """participants.tsv (indexed by participant_id) and every sub-*/sub-*_sessions.tsv, after checking that
    each holds the columns the layout reads; one TableError lists every missing file/column."""
    problems = []
    participants_path = bids_dir / "participants.tsv"
    wanted = layout.participants_columns()
    participants = pd.DataFrame(columns=["participant_id", *wanted]).set_index("participant_id")
    if participants_path.is_file():
        frame = _read_tsv(participants_path)
        missing = [f"{c!r} ({key})" for c, key in {"participant_id": "BIDS", **wanted}.items() if c not in frame]
        if missing:
            problems.append(f"{participants_path}: column(s) {', '.join(missing)} missing; found {list(frame.columns)}")
        else:
            participants = frame.drop_duplicates("participant_id").set_index("participant_id")
    elif wanted:
        problems.append(
            f"{participants_path} not found; the layout reads its column(s) {sorted(wanted)}"
            + (" (rerun rule adni_to_bids; its log is logs/adni_to_bids.log)" if layout.source == "clinica" else "")
        )
    visits, lacking = [], {}
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        frame = _read_tsv(path)
        for column, key in {"session_id": "BIDS", **layout.sessions_columns()}.items():
            if column not in frame.columns:
                lacking.setdefault((column, key), []).append(path)
        frame = frame.drop(columns=["participant_id"], errors="ignore")  # the folder decides
        frame.insert(0, "participant_id", path.parent.name)
        visits.append(frame)
    for (column, key), paths in lacking.items():
        shown = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        problems.append(f"column {column!r} ({key}) missing from {len(paths)} sessions.tsv file(s): {shown}")
    if problems:
        raise TableError(f"the BIDS dataset {bids_dir} lacks what the session table reads:\n"
                         + "\n".join(f"  - {p}" for p in problems))  # fmt: skip
    visits = pd.concat(visits, ignore_index=True) if visits else pd.DataFrame(columns=["participant_id", "session_id"])
    return participants, visits


def _header_problem(path: Path) -> str | None:
    """Why a NIfTI cannot be used (header unreadable, not 3-D, empty), or None. Reads the header only."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = image.header.get_data_shape()
    except Exception as error:  # nibabel raises several types for corrupt files
        return f"unreadable NIfTI ({type(error).__name__}: {error})"
    if len(shape) == 4 and shape[3] == 1:
        return None
    if len(shape) != 3:
        return f"image is {len(shape)}-D {tuple(shape)}, expected a 3-D T1w"
    if min(shape) < 2:
        return f"degenerate image shape {tuple(shape)}"
    return None


class _Exclusions(list):
    def add(self, participant_id: str, session_id: str, reason: str, path: str = "") -> None:
        self.append({"participant_id": participant_id, "session_id": session_id or "n/a", "stage": "sessions",
                     "reason": reason, "path": path})  # fmt: skip


def choose_images(bids_dir: Path, images: pd.DataFrame, layout: Layout, excluded: _Exclusions) -> pd.DataFrame:
    """One T1w per session: the first readable image in the layout's order (config data.bids.t1w); every other
    image of the session goes to the exclusions with the reason, and each choice among several is logged."""
    chosen = []
    for _, row in images[images.session_id == ""].iterrows():
        excluded.add(row.participant_id, "", "no ses- entity: the workflow needs one session folder per visit "
                     "(put the image under sub-<label>/ses-<label>/anat/)", row.t1w)  # fmt: skip
    with_session = images[images.session_id != ""]
    for (participant_id, session_id), group in with_session.groupby(["participant_id", "session_id"], sort=True):
        order = sorted(group.itertuples(), key=lambda r: layout.candidate_order(r.acquisition, r.run, r.t1w))
        problems = {candidate.t1w: _header_problem(bids_dir / candidate.t1w) for candidate in order}
        usable = [candidate for candidate in order if not problems[candidate.t1w]]
        for candidate in order:
            if problems[candidate.t1w]:
                excluded.add(participant_id, session_id, problems[candidate.t1w], candidate.t1w)
        if not usable:
            continue
        pick = usable[0]
        for candidate in usable[1:]:
            excluded.add(participant_id, session_id, f"another T1w of the session was chosen: {pick.t1w} "
                         f"({layout.choice_rule()})", candidate.t1w)  # fmt: skip
        if len(order) > 1:
            log.info("%s %s: %d T1w images, chose %s (%s)", participant_id, session_id, len(order), pick.t1w,
                     layout.choice_rule())  # fmt: skip
        chosen.append({"participant_id": participant_id, "session_id": session_id, "t1w": pick.t1w})
    return pd.DataFrame(chosen, columns=["participant_id", "session_id", "t1w"])


def _scans_acq_time(bids_dir: Path, participant_id: str, session_id: str, t1w: str):
    """acq_time of the image in its scans.tsv (session level, else subject level), or None."""
    image = bids_dir / t1w
    for scans in (bids_dir / participant_id / session_id / f"{participant_id}_{session_id}_scans.tsv",
                  bids_dir / participant_id / f"{participant_id}_scans.tsv"):  # fmt: skip
        if scans.is_file():
            table = _read_tsv(scans)
            if {"filename", "acq_time"} <= set(table.columns):
                names = table.filename.map(lambda name, folder=scans.parent: (folder / str(name)).as_posix())
                hit = table.loc[names == image.as_posix(), "acq_time"]
                if len(hit) and pd.notna(hit.iloc[0]):
                    return hit.iloc[0]
    return None


def visit_months(bids_dir: Path, table: pd.DataFrame, layout: Layout) -> pd.Series:
    """Months since the subject's first session (time source acq_time or age) or as the label/column gives them
    (session_label, column), for every row of `table` (participant_id, session_id, sessions.tsv columns, t1w);
    NaN where the source has nothing."""
    source = layout.time["source"]
    nothing = pd.Series(float("nan"), index=table.index)
    if source == "session_label":
        return table.session_id.map(lambda s: layout.label_months(s)).astype(float)
    if source == "column":
        column = layout.time["column"]
        return table[column].map(layout.column_months).astype(float) if column in table else nothing
    if source == "age":
        if layout.age_column not in table:
            return nothing
        value = pd.to_numeric(table[layout.age_column], errors="coerce") * 12.0
    else:
        stamps = table["acq_time"] if "acq_time" in table else pd.Series(pd.NA, index=table.index, dtype=object)
        missing = stamps.isna() & table.t1w.notna()
        stamps = stamps.copy()
        stamps[missing] = [_scans_acq_time(bids_dir, r.participant_id, r.session_id, r.t1w)
                           for r in table[missing].itertuples()]  # fmt: skip
        when = pd.to_datetime(stamps, errors="coerce", format="mixed", utc=True)  # no zone: read as UTC
        value = (when - pd.Timestamp("1900-01-01", tz="UTC")).dt.total_seconds() / 86400.0 / DAYS_PER_MONTH
    return value - value.groupby(table.participant_id).transform("min")


def _time_reason(layout: Layout) -> str:
    time = layout.time
    what = {"session_label": f"session label does not match pattern {time['pattern']!r}",
            "column": f"no value in sessions.tsv column {time['column']!r}",
            "age": f"no age in sessions.tsv column {layout.age_column!r}",
            "acq_time": "no acq_time in sessions.tsv or scans.tsv"}[time["source"]]  # fmt: skip
    return f"no time: {what} ({layout.key('time')})"


def _nearest_diagnosis(visits: pd.DataFrame, participant_id: str, months: float) -> str | None:
    own = visits[(visits.participant_id == participant_id) & visits.diagnosis_norm.notna() & visits.months.notna()]
    if own.empty:
        return None
    return own.loc[(own.months - months).abs().idxmin(), "diagnosis_norm"]


def _merged_visits(bids_dir: Path, layout: Layout, chosen: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """sessions.tsv rows (with or without an image) joined with the chosen images; months and mapped diagnosis."""
    twice = visits.duplicated(["participant_id", "session_id"])
    if twice.any():
        log.warning("sessions.tsv lists %d session(s) twice; the first row is used: %s", int(twice.sum()),
                    visits.loc[twice, ["participant_id", "session_id"]].head(5).values.tolist())  # fmt: skip
        visits = visits[~twice]
    merged = visits.merge(chosen, on=["participant_id", "session_id"], how="outer")
    merged["months"] = visit_months(bids_dir, merged, layout)
    raw = merged[layout.diagnosis_column] if layout.diagnosis_column in merged else pd.Series(None, index=merged.index)
    merged["diagnosis_raw"] = raw
    merged["diagnosis_norm"] = raw.map(lambda v: normalise_diagnosis(v, layout))
    return merged


def _diagnosis(row, visits, participants, layout, diagnosis_missing) -> tuple[str | None, str]:
    """(CN/MCI/AD or None, the reason when None)."""
    unmapped = f"is not mapped to CN/MCI/AD ({layout.key('diagnosis', 'values')})"
    if pd.notna(row.diagnosis_raw) and str(row.diagnosis_raw).strip() and row.diagnosis_norm is None:
        return None, f"diagnosis value {row.diagnosis_raw!r} {unmapped}"
    diagnosis = row.diagnosis_norm
    column = layout.diagnosis_participants_column
    if diagnosis is None and column and row.participant_id in participants.index:
        value = participants.loc[row.participant_id, column]
        diagnosis = normalise_diagnosis(value, layout)
        if diagnosis is None and pd.notna(value):
            return None, f"participants.tsv diagnosis {value!r} {unmapped}"
    if diagnosis is None and diagnosis_missing == "nearest":
        diagnosis = _nearest_diagnosis(visits, row.participant_id, row.months)
    where = f"sessions.tsv column {layout.diagnosis_column!r}" if layout.diagnosis_column else "no diagnosis column"
    key = layout.key("diagnosis", "column")
    return diagnosis, f"no diagnosis for this visit ({where}: {key}; config sessions.diagnosis_missing)"


def _age(row, participants, layout) -> float | None:
    age = pd.to_numeric(row[layout.age_column], errors="coerce") if layout.age_column in row.index else float("nan")
    column = layout.baseline_age_column
    if pd.isna(age) and column and row.participant_id in participants.index:
        age = pd.to_numeric(participants.loc[row.participant_id, column], errors="coerce") + row.months / 12.0
    return None if pd.isna(age) else float(age)


def build_session_table(
    bids_dir: Path,
    diagnoses: tuple[str, ...] = DIAGNOSES,
    diagnosis_missing: str = "exclude",
    layout: Layout | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions, exclusions) from a BIDS dataset read with `layout` (default: clinica's adni-to-bids output)."""
    bids_dir, layout = Path(bids_dir), layout or Layout.from_config()
    if not bids_dir.is_dir():
        raise TableError(f"BIDS folder not found: {bids_dir}")
    participants, visits = read_clinical(bids_dir, layout)
    images = find_t1w_images(bids_dir)
    excluded = _Exclusions()
    for participant_id in sorted(set(participants.index) - set(images.participant_id)):
        if (bids_dir / participant_id).is_dir():
            excluded.add(participant_id, "", "subject folder has no T1w image")
    chosen = choose_images(bids_dir, images, layout, excluded)
    merged = _merged_visits(bids_dir, layout, chosen, visits)
    kept = []
    for _, row in merged[merged.t1w.notna()].sort_values(["participant_id", "session_id"]).iterrows():
        if pd.isna(row.months):
            excluded.add(row.participant_id, row.session_id, _time_reason(layout), row.t1w)
            continue
        diagnosis, reason = _diagnosis(row, merged, participants, layout, diagnosis_missing)
        if diagnosis is None:
            excluded.add(row.participant_id, row.session_id, reason, row.t1w)
            continue
        if diagnosis not in diagnoses:
            excluded.add(row.participant_id, row.session_id, f"diagnosis {diagnosis} not in config sessions.diagnoses "
                         f"{list(diagnoses)}", row.t1w)  # fmt: skip
            continue
        age = _age(row, participants, layout)
        if age is None:
            why = (
                f"no age: neither sessions.tsv {layout.age_column!r} nor participants.tsv "
                f"{layout.baseline_age_column!r} ({layout.key('age', 'column')})"
            )
            excluded.add(row.participant_id, row.session_id, why, row.t1w)
            continue
        sex = participants.loc[row.participant_id, layout.sex_column] if (
            layout.sex_column and row.participant_id in participants.index) else None  # fmt: skip
        kept.append({"participant_id": row.participant_id, "session_id": row.session_id,
                     "months": int(round(row.months)), "age": round(age, 2),
                     "sex": sex if isinstance(sex, str) and sex else "n/a", "diagnosis": diagnosis,
                     "t1w": row.t1w})  # fmt: skip
    return pd.DataFrame(kept, columns=SESSION_COLUMNS), pd.DataFrame(excluded, columns=EXCLUSION_COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae sessions", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bids-dir", type=Path, required=True, help="the BIDS dataset (clinica's output or data.bids_dir)"
    )
    parser.add_argument("--out", type=Path, required=True, help="session table (TSV)")
    parser.add_argument("--excluded", type=Path, required=True, help="exclusions table (TSV)")
    parser.add_argument("--diagnoses", default=",".join(DIAGNOSES), help="comma-separated diagnoses to keep")
    parser.add_argument("--diagnosis-missing", choices=["exclude", "nearest"], default="exclude")
    parser.add_argument("--layout-json", default="", help="config data.bids as JSON (default: clinica's layout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    diagnoses = tuple(d.strip().upper() for d in args.diagnoses.split(",") if d.strip())
    unknown = sorted(set(diagnoses) - set(DIAGNOSES))
    if unknown:
        parser.error(f"--diagnoses: unknown {unknown}; choose from {list(DIAGNOSES)}")
    if not args.bids_dir.is_dir():
        parser.error(f"--bids-dir {args.bids_dir} is not a folder (config data.bids_dir for data.source: bids)")
    try:
        layout = Layout.from_json(args.layout_json)
    except ValueError as error:
        parser.error(str(error))
    sessions, excluded = build_session_table(args.bids_dir, diagnoses, args.diagnosis_missing, layout)
    if sessions.empty:
        raise TableError(
            f"no usable T1w session in {args.bids_dir}; reasons: {excluded.reason.value_counts().to_dict()}"
        )
    write_tsv_atomic(excluded, args.excluded)
    write_tsv_atomic(sessions, args.out)
    counts = sessions.groupby("diagnosis").participant_id.nunique().to_dict()
    log.info(
        "%d sessions of %d subjects %s; %d excluded (%s)",
        len(sessions),
        sessions.participant_id.nunique(),
        counts,
        len(excluded),
        args.excluded,
    )
    return 0
