"""The ADNI study tables that clinica 0.12's `adni-to-bids -m T1` reads, and the columns it reads from each.

Checked before clinica starts (`ldae adni-to-bids`), so that a table without a column is one message naming
every missing file/column and the config key, instead of a KeyError deep inside clinica (or, for DX, a
converted dataset whose sessions.tsv lacks the diagnosis our session table needs).

The lists come from clinica 0.12.0's converter (clinica/converters/adni_to_bids: modality_converters/_t1.py,
_visits_utils.py, _utils.py, ../_utils.py create_participants_df, specifications/*.tsv);
tests/test_adni_tables.py pins them against the installed clinica: dropping any listed column makes clinica's
own readers fail or change what they write, and tables cut down to exactly these columns convert alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

CLINICA_VERSION = "0.12.0"

_T1 = "T1 scan selection"
_PARTICIPANTS = "participants.tsv"
_SESSIONS = "sessions.tsv"
_OURS = "the session table (ldae sessions)"

# table stem (NAME.csv or NAME_<ddMonYYYY>.csv) -> {column: what reads it}
REQUIRED_COLUMNS: dict[str, dict[str, str]] = {
    "ADNIMERGE": {
        "PTID": f"subject list, {_T1}, {_PARTICIPANTS}, {_SESSIONS}",
        "RID": f"{_PARTICIPANTS} adni_rid",
        "SITE": f"{_PARTICIPANTS} site",
        "COLPROT": _T1,
        "ORIGPROT": f"{_T1}, {_PARTICIPANTS} original_study",
        "VISCODE": f"{_T1}, {_SESSIONS} session_id",
        "EXAMDATE": f"{_T1}, {_SESSIONS} age",
        "EXAMDATE_bl": f"{_SESSIONS} age",
        "AGE": f"{_PARTICIPANTS} age_bl, {_SESSIONS} age; {_OURS} age",
        "PTGENDER": f"{_PARTICIPANTS} sex",
        "PTEDUCAT": f"{_PARTICIPANTS} education_level",
        "PTETHCAT": f"{_PARTICIPANTS} ethnic_cat",
        "PTMARRY": f"{_PARTICIPANTS} marital_status",
        "APOE4": f"{_PARTICIPANTS} apoe4",
        "DX_bl": f"{_PARTICIPANTS} diagnosis_sc",
        "MMSE_bl": _PARTICIPANTS,
        "ADAS11_bl": _PARTICIPANTS,
        "ADAS13_bl": _PARTICIPANTS,
        "ADASQ4_bl": _PARTICIPANTS,
        "RAVLT_immediate_bl": _PARTICIPANTS,
        "MOCA_bl": _PARTICIPANTS,
        "TRABSCOR_bl": _PARTICIPANTS,
        "mPACCdigit_bl": _PARTICIPANTS,
        "mPACCtrailsB_bl": _PARTICIPANTS,
        "AV45": f"{_SESSIONS} amyloid status",
        "PIB": f"{_SESSIONS} amyloid status",
        "ABETA": f"{_SESSIONS} amyloid status",
        "PTAU": f"{_SESSIONS} tau status",
        "DX": f"{_SESSIONS} diagnosis; {_OURS} diagnosis",
    },
    "MPRAGEMETA": {
        column: _T1
        for column in (
            "SubjectID",
            "Orig/Proc",
            "Visit",
            "Sequence",
            "ScanDate",
            "StudyID",
            "SeriesID",
            "ImageUID",
            "MagStrength",
        )  # fmt: skip
    },
    "MRIQUALITY": {column: f"{_T1} (ADNI1/GO/2 QC)" for column in ("RID", "LONIUID", "PASS")},
    "MAYOADIRL_MRI_IMAGEQC_05_07_15": {
        column: f"{_T1} (3T QC)" for column in ("RID", "series_type", "loni_image", "series_selected", "series_quality")
    },
    "APOERES": {"APGEN1": f"{_PARTICIPANTS} apoe_gen1", "APGEN2": f"{_PARTICIPANTS} apoe_gen2"},
    "DXSUM_PDXCONV_ADNIALL": {
        "PTID": f"{_PARTICIPANTS} diagnosis_sc (ADNI3)",
        "VISCODE2": f"{_PARTICIPANTS} diagnosis_sc (ADNI3)",
        "DIAGNOSIS": f"{_PARTICIPANTS} diagnosis_sc (ADNI3; clinica writes n/a without it)",
    },
}
# clinica accepts APOERES.csv's newer GENOTYPE column ("3/4") instead of APGEN1/APGEN2
ALTERNATIVES = {("APOERES", "APGEN1"): "GENOTYPE", ("APOERES", "APGEN2"): "GENOTYPE"}
# Tables clinica reads only when present (sessions.tsv columns, specifications/sessions.tsv): it then needs the
# subject (RID) and the visit column it derives the session from (a table that lacks one stops clinica).
OPTIONAL_TABLES = {
    "CDR": "VISCODE2", "ITEM": "VISCODE", "NEUROBAT": "VISCODE2", "CCI": "VISCODE2", "ECOGPT": "VISCODE2",
    "ECOGSP": "VISCODE2", "FCI": "VISCODE2", "GDSCALE": "VISCODE2", "MODHACH": "VISCODE2", "MOCA": "VISCODE2",
    "NPI": "VISCODE2", "NPIQ": "VISCODE2", "BHR_EVERYDAY_COGNITION": "Timepoint",
    "BHR_BASELINE_QUESTIONNAIRE": "Timepoint", "BHR_LONGITUDINAL_QUESTIONNAIRE": "Timepoint",
    "MEDHIST": "VISCODE2", "VITALS": "VISCODE2", "UWNPSYCHSUM_03_07_19": "VISCODE2", "UWNPSYCHSUM_03_26_20": "VISCODE2",
}  # fmt: skip
# clinica reads DXSUM_PDXCONV.csv when DXSUM_PDXCONV_ADNIALL.csv is not there
TABLE_ALTERNATIVES = {"DXSUM_PDXCONV_ADNIALL": "DXSUM_PDXCONV"}
# ADNIMERGE DX values clinica converts (CN/MCI/AD); one other value and it leaves the whole column unconverted
DX_VALUES = ("CN", "MCI", "Dementia")


def find_table(clinical_dir: Path, stem: str) -> list[Path]:
    """Files clinica's `load_clinical_csv` would match for `stem` (NAME.csv or NAME_<ddMonYYYY>.csv)."""
    pattern = re.compile(stem + r"(_\d{1,2}[A-Za-z]{3}\d{4})?.csv")
    return sorted(f for f in Path(clinical_dir).rglob("[!.]*.csv") if pattern.search(f.name))


def _header(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def _missing_columns(stem: str, columns: list[str]) -> list[str]:
    missing = []
    for column, reader in REQUIRED_COLUMNS[stem].items():
        alternative = ALTERNATIVES.get((stem, column))
        if column not in columns and not (alternative and alternative in columns):
            missing.append(f"{column} ({reader}{f'; or {alternative}' if alternative else ''})")
    return missing


def _unknown_dx(path: Path) -> list[str]:
    values = pd.read_csv(path, usecols=["DX"], dtype=str)["DX"].dropna().str.strip()
    return sorted(set(values) - set(DX_VALUES) - {""})


def table_problems(clinical_dir: Path) -> list[str]:
    """One line per problem: a required table missing or ambiguous, a column missing, a DX value clinica rejects."""
    problems = []
    for stem in REQUIRED_COLUMNS:
        found = find_table(clinical_dir, stem)
        if not found and stem in TABLE_ALTERNATIVES:
            found = find_table(clinical_dir, TABLE_ALTERNATIVES[stem])
        if len(found) != 1:
            what = "missing" if not found else f"ambiguous ({len(found)} matches: {', '.join(f.name for f in found)})"
            problems.append(f"{stem}.csv {what}")
            continue
        columns = _header(found[0])
        missing = _missing_columns(stem, columns)
        if missing:
            problems.append(f"{found[0].name}: missing column(s) " + ", ".join(missing))
        if stem == "ADNIMERGE" and "DX" in columns:
            unknown = _unknown_dx(found[0])
            if unknown:
                problems.append(f"{found[0].name}: DX value(s) {unknown[:5]} are not {'/'.join(DX_VALUES)} (with "
                                "them clinica converts no diagnosis of sessions.tsv)")  # fmt: skip
    for stem, visit_column in OPTIONAL_TABLES.items():
        found = find_table(clinical_dir, stem)
        if len(found) == 1:  # clinica skips a table it finds 0 or 2+ times
            columns = _header(found[0])
            missing = [c for c in ("RID", visit_column) if c not in columns]
            if missing:
                problems.append(f"{found[0].name}: missing column(s) {', '.join(missing)} (clinica reads this "
                                "optional table for sessions.tsv; remove it or download it complete)")  # fmt: skip
    return problems
