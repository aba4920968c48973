"""How the session table reads a BIDS dataset: which T1w of a session, and which participants.tsv/sessions.tsv
columns hold the diagnosis, the age and the time of each session (config `data.bids`).

The defaults describe clinica's adni-to-bids output (what `data.source: adni` and `synthetic` produce, and what a
site-wide clinica run left); another cohort (OASIS-3, AIBL, in-house) sets its own columns, value map and time.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass

import pandas as pd

DIAGNOSES = ("CN", "MCI", "AD")
# clinica's layout; equal to the schema defaults of config data.bids (tests/test_bids_source.py checks it)
CLINICA_LAYOUT = {
    "t1w": {"acquisition": [], "run": "first"},
    "sex": "sex",
    "diagnosis": {"column": "diagnosis", "participants_column": "", "values": {}},
    "age": {"column": "age", "baseline_column": "age_bl"},
    "time": {"source": "session_label", "pattern": "^M(\\d+)$", "column": "", "unit": "months"},
}
# where clinica takes each default column from (named in errors when the source is adni or synthetic)
CLINICA_ORIGIN = {"diagnosis": "ADNIMERGE.csv DX", "age": "ADNIMERGE.csv AGE", "age_bl": "ADNIMERGE.csv AGE",
                  "sex": "ADNIMERGE.csv PTGENDER"}  # fmt: skip
# ADNI's and clinica's spellings are always known; config data.bids.diagnosis.values adds to (and overrides) them
BUILTIN_DIAGNOSIS_VALUES = {
    "CN": "CN", "SMC": "CN", "NL": "CN",
    "MCI": "MCI", "EMCI": "MCI", "LMCI": "MCI",
    "AD": "AD", "DEMENTIA": "AD",
}  # fmt: skip
MONTHS_PER_UNIT = {"months": 1.0, "days": 12 / 365.25, "years": 12.0}
DAYS_PER_MONTH = 365.25 / 12


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def value_key(value) -> tuple:
    """A diagnosis value as a lookup key: numbers compare as numbers ('0.50' == 0.5), text case- and
    blank-insensitively ('cdr  0.5' == 'CDR 0.5')."""
    text = " ".join(str(value).split())
    try:
        number = float(text)
    except ValueError:
        return ("text", text.upper())
    return ("number", number) if math.isfinite(number) else ("text", text.upper())


@dataclass(frozen=True)
class Layout:
    """Config data.bids (without `validate`) with clinica's layout as the default; `source` names it in errors."""

    settings: dict
    source: str = "clinica"

    @classmethod
    def from_config(cls, section: dict | None = None) -> Layout:
        if not section:
            return cls(copy.deepcopy(CLINICA_LAYOUT), "clinica")
        section = {k: v for k, v in section.items() if k != "validate"}
        unknown = sorted(set(section) - set(CLINICA_LAYOUT))
        if unknown:
            raise ValueError(f"config data.bids: unknown key(s) {unknown}; known: {sorted(CLINICA_LAYOUT)}")
        layout = cls(_merge(CLINICA_LAYOUT, section), "config")
        layout.check()
        return layout

    @classmethod
    def from_json(cls, text: str | None) -> Layout:
        return cls.from_config(json.loads(text) if text else None)

    def check(self) -> None:
        time = self.settings["time"]
        if time["source"] not in ("session_label", "column", "age", "acq_time"):
            raise ValueError(f"config data.bids.time.source {time['source']!r}: session_label|column|age|acq_time")
        if time["source"] == "column" and not time["column"]:
            raise ValueError("config data.bids.time.source is 'column' but data.bids.time.column is empty")
        if time["source"] == "age" and not self.settings["age"]["column"]:
            raise ValueError("config data.bids.time.source is 'age' but data.bids.age.column is empty")
        if time["unit"] not in MONTHS_PER_UNIT:
            raise ValueError(f"config data.bids.time.unit {time['unit']!r}: one of {list(MONTHS_PER_UNIT)}")
        if time["source"] == "session_label":
            try:
                pattern = re.compile(time["pattern"])
            except re.error as error:
                raise ValueError(f"config data.bids.time.pattern {time['pattern']!r}: {error}") from None
            if pattern.groups < 1:
                raise ValueError(f"config data.bids.time.pattern {time['pattern']!r} needs a group: the number")
        if self.settings["t1w"]["run"] not in ("first", "last"):
            raise ValueError(f"config data.bids.t1w.run {self.settings['t1w']['run']!r}: first | last")
        bad = {k: v for k, v in self.diagnosis_values().items() if v not in DIAGNOSES}
        if bad:
            raise ValueError(f"config data.bids.diagnosis.values: targets must be {list(DIAGNOSES)}, got {bad}")

    # ---- column names (an empty string: not used)
    @property
    def sex_column(self) -> str:
        return self.settings["sex"]

    @property
    def diagnosis_column(self) -> str:
        return self.settings["diagnosis"]["column"]

    @property
    def diagnosis_participants_column(self) -> str:
        return self.settings["diagnosis"]["participants_column"]

    @property
    def age_column(self) -> str:
        return self.settings["age"]["column"]

    @property
    def baseline_age_column(self) -> str:
        return self.settings["age"]["baseline_column"]

    @property
    def time(self) -> dict:
        return self.settings["time"]

    def key(self, *path: str) -> str:
        """Where a setting comes from, for messages: the config key, or the ADNI table clinica fills it from."""
        if self.source == "config":
            return "config data.bids." + ".".join(path)
        column = self.settings
        for part in path:
            column = column.get(part, {}) if isinstance(column, dict) else {}
        origin = CLINICA_ORIGIN.get(column) if isinstance(column, str) else None
        return f"clinica writes it from {origin}, config data.clinical_dir" if origin else "clinica's layout"

    def participants_columns(self) -> dict[str, str]:
        """{column: its config path} of participants.tsv the layout reads."""
        wanted = {self.sex_column: ("sex",), self.diagnosis_participants_column: ("diagnosis", "participants_column"),
                  self.baseline_age_column: ("age", "baseline_column")}  # fmt: skip
        return {column: self.key(*path) for column, path in wanted.items() if column}

    def sessions_columns(self) -> dict[str, str]:
        """{column: its config path} of sub-*_sessions.tsv the layout reads."""
        wanted = {self.diagnosis_column: ("diagnosis", "column"), self.age_column: ("age", "column")}
        if self.time["source"] == "column":
            wanted[self.time["column"]] = ("time", "column")
        return {column: self.key(*path) for column, path in wanted.items() if column}

    # ---- values
    def diagnosis_values(self) -> dict[str, str]:
        return {str(k): str(v).upper() for k, v in (self.settings["diagnosis"]["values"] or {}).items()}

    def diagnosis_map(self) -> dict[tuple, str]:
        table = {value_key(k): v for k, v in BUILTIN_DIAGNOSIS_VALUES.items()}
        table.update({value_key(k): v for k, v in self.diagnosis_values().items()})
        return table

    def label_months(self, session_id: str) -> float | None:
        """Months from a session label (`ses-M006` -> 6 with clinica's pattern), or None if it does not match."""
        match = re.search(self.time["pattern"], session_id.removeprefix("ses-"))
        if not match:
            return None
        return float(match.group(1)) * MONTHS_PER_UNIT[self.time["unit"]]

    def column_months(self, value) -> float | None:
        number = pd.to_numeric(value, errors="coerce")
        return None if pd.isna(number) else float(number) * MONTHS_PER_UNIT[self.time["unit"]]

    def choice_rule(self) -> str:
        t1w = self.settings["t1w"]
        preferred = ", ".join(t1w["acquisition"]) or "none given: no acq- first, then by label"
        return f"acquisition preference [{preferred}], {t1w['run']} run ({self.key('t1w')})"

    def candidate_order(self, acquisition: str, run: int | None, path: str) -> tuple:
        """Sort key of a session's T1w images: preferred acquisition, then the configured run, then the path."""
        preferred = list(self.settings["t1w"]["acquisition"])
        rank = preferred.index(acquisition) if acquisition in preferred else len(preferred)
        run_number = run if run is not None else 0
        run_key = run_number if self.settings["t1w"]["run"] == "first" else -run_number
        return (rank, acquisition != "", acquisition, run_key, path)
