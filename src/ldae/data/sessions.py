"""`ldae sessions`: the session table, built from clinica's BIDS output with pybids.

One row per usable T1w session: participant, session, months since baseline, age at scan, sex, diagnosis
(CN/MCI/AD), and the T1w path relative to the BIDS root. Every session that cannot be used goes to the
exclusions table with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pandas as pd

from ldae.data.tables import EXCLUSION_COLUMNS, SESSION_COLUMNS, TableError, write_tsv_atomic

log = logging.getLogger("ldae.sessions")

DIAGNOSES = ("CN", "MCI", "AD")
# clinica writes CN/MCI/AD; accept ADNI's raw spellings too (ADNIMERGE DX / DX_bl values).
_DIAGNOSIS_ALIASES = {
    "CN": "CN", "SMC": "CN", "NL": "CN",
    "MCI": "MCI", "EMCI": "MCI", "LMCI": "MCI",
    "AD": "AD", "DEMENTIA": "AD",
}
_SESSION_MONTHS = re.compile(r"^ses-M(\d+)$")


def normalise_diagnosis(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return _DIAGNOSIS_ALIASES.get(str(value).strip().upper())


def session_months(session_id: str) -> int:
    """`ses-M006` -> 6 (clinica's ADNI session labels are months since the subject's baseline)."""
    match = _SESSION_MONTHS.match(session_id)
    if not match:
        raise ValueError(f"session label {session_id!r} is not clinica's ADNI form ses-M<months>")
    return int(match.group(1))


def find_t1w_images(bids_dir: Path) -> pd.DataFrame:
    """Every T1w NIfTI in the BIDS dataset, indexed by pybids: participant_id, session_id, run, t1w."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    layout = BIDSLayout(str(bids_dir), indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    rows = []
    for image in layout.get(suffix="T1w", datatype="anat", extension=[".nii.gz", ".nii"]):
        entities = image.get_entities()
        rows.append(
            {
                "participant_id": f"sub-{entities['subject']}",
                "session_id": f"ses-{entities['session']}" if "session" in entities else "",
                "run": int(entities.get("run", 1)),
                "t1w": Path(image.path).relative_to(bids_dir.resolve()).as_posix(),
            }
        )
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "run", "t1w"])


def read_clinical(bids_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """participants.tsv and every sub-*/sub-*_sessions.tsv (age, diagnosis per visit)."""
    participants_path = bids_dir / "participants.tsv"
    if not participants_path.is_file():
        raise TableError(
            f"{participants_path} not found: the BIDS folder was not written by a finished clinica "
            "adni-to-bids run; rerun rule adni_to_bids (its log is in logs/adni_to_bids.log)"
        )
    participants = pd.read_csv(participants_path, sep="\t", dtype=str, na_values=["n/a", ""])
    for column in ("participant_id", "sex", "age_bl", "diagnosis_sc"):
        if column not in participants.columns:
            raise TableError(f"{participants_path}: column {column!r} missing (clinica's participants.tsv has it)")
    visits = []
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        frame = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a", ""])
        for column in ("session_id", "age", "diagnosis"):
            if column not in frame.columns:
                raise TableError(f"{path}: column {column!r} missing (clinica's sessions.tsv has it)")
        frame.insert(0, "participant_id", path.parent.name)
        visits.append(frame[["participant_id", "session_id", "age", "diagnosis"]])
    visits = pd.concat(visits) if visits else pd.DataFrame(columns=["participant_id", "session_id", "age", "diagnosis"])
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


def _nearest_diagnosis(visits: pd.DataFrame, participant_id: str, months: int) -> str | None:
    own = visits[(visits.participant_id == participant_id) & visits.diagnosis_norm.notna()]
    if own.empty:
        return None
    distance = (own.session_id.map(session_months) - months).abs()
    return own.loc[distance.idxmin(), "diagnosis_norm"]


def build_session_table(
    bids_dir: Path, diagnoses: tuple[str, ...] = DIAGNOSES, diagnosis_missing: str = "exclude"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions, exclusions) from a clinica BIDS dataset."""
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise TableError(f"BIDS folder not found: {bids_dir}")
    images = find_t1w_images(bids_dir)
    participants, visits = read_clinical(bids_dir)
    visits = visits.assign(diagnosis_norm=visits.diagnosis.map(normalise_diagnosis))
    participants = participants.set_index("participant_id")
    kept, excluded = [], []

    def exclude(row, reason):
        excluded.append({"participant_id": row["participant_id"], "session_id": row.get("session_id", "") or "n/a",
                         "stage": "sessions", "reason": reason, "path": row.get("t1w", "")})

    for participant_id in sorted(set(participants.index) - set(images.participant_id)):
        if (bids_dir / participant_id).is_dir():
            exclude({"participant_id": participant_id}, "subject folder has no T1w image")
    for _, row in images.sort_values(["participant_id", "session_id", "run"]).iterrows():
        key = (row.participant_id, row.session_id)
        if any((r["participant_id"], r["session_id"]) == key for r in kept[-1:]):
            exclude(row, f"additional T1w run {row.run}; the first run of the session is used")
            continue
        try:
            months = session_months(row.session_id)
        except ValueError as error:
            exclude(row, str(error))
            continue
        problem = _header_problem(bids_dir / row.t1w)
        if problem:
            exclude(row, problem)
            continue
        visit = visits[(visits.participant_id == row.participant_id) & (visits.session_id == row.session_id)]
        diagnosis = visit.diagnosis_norm.iloc[0] if len(visit) else None
        if diagnosis is None and diagnosis_missing == "nearest":
            diagnosis = _nearest_diagnosis(visits, row.participant_id, months)
        if diagnosis is None:
            exclude(row, "no diagnosis for this visit in sessions.tsv (config sessions.diagnosis_missing)")
            continue
        if diagnosis not in diagnoses:
            exclude(row, f"diagnosis {diagnosis} not in config sessions.diagnoses {list(diagnoses)}")
            continue
        subject = participants.loc[row.participant_id] if row.participant_id in participants.index else None
        age = pd.to_numeric(visit.age.iloc[0], errors="coerce") if len(visit) else float("nan")
        if pd.isna(age) and subject is not None:
            age = pd.to_numeric(subject["age_bl"], errors="coerce") + months / 12.0
        if pd.isna(age):
            exclude(row, "no age: neither sessions.tsv age nor participants.tsv age_bl")
            continue
        kept.append({"participant_id": row.participant_id, "session_id": row.session_id, "months": months,
                     "age": round(float(age), 2), "sex": subject["sex"] if subject is not None else "n/a",
                     "diagnosis": diagnosis, "t1w": row.t1w})
    return (pd.DataFrame(kept, columns=SESSION_COLUMNS), pd.DataFrame(excluded, columns=EXCLUSION_COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--bids-dir", type=Path, required=True, help="clinica's BIDS output")
    parser.add_argument("--out", type=Path, required=True, help="session table (TSV)")
    parser.add_argument("--excluded", type=Path, required=True, help="exclusions table (TSV)")
    parser.add_argument("--diagnoses", default=",".join(DIAGNOSES), help="comma-separated diagnoses to keep")
    parser.add_argument("--diagnosis-missing", choices=["exclude", "nearest"], default="exclude")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    diagnoses = tuple(d.strip().upper() for d in args.diagnoses.split(",") if d.strip())
    unknown = sorted(set(diagnoses) - set(DIAGNOSES))
    if unknown:
        parser.error(f"--diagnoses: unknown {unknown}; choose from {list(DIAGNOSES)}")
    sessions, excluded = build_session_table(args.bids_dir, diagnoses, args.diagnosis_missing)
    if sessions.empty:
        raise TableError(f"no usable T1w session in {args.bids_dir}; reasons: {excluded.reason.value_counts().to_dict()}")
    write_tsv_atomic(excluded, args.excluded)
    write_tsv_atomic(sessions, args.out)
    counts = sessions.groupby("diagnosis").participant_id.nunique().to_dict()
    log.info("%d sessions of %d subjects %s; %d excluded (%s)", len(sessions), sessions.participant_id.nunique(),
             counts, len(excluded), args.excluded)
    return 0
