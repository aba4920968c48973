"""Shared test fixtures. Shared plain helpers live in tests/helpers/ (the package `helpers`: tiny models, rule
blocks, config merging, cohorts); tests import them from there, never from each other."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/ on sys.path whatever pytest's import mode (the default `prepend` puts it there too), so `import helpers`
# works in every test module and here
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from helpers.cohort import make_cohort  # noqa: E402


@pytest.fixture(scope="session")
def ci_cohort(tmp_path_factory) -> Path:
    """8 training sessions (4 subjects x 2), 5 validation sessions (3 subjects, the last one's second session
    excluded by QC: an odd count, so 2 ranks get different numbers of validation batches), 2 test sessions, at the
    CI image grid."""
    root = make_cohort(tmp_path_factory.mktemp("ci_cohort"), {"train": 4, "val": 3, "test": 1})
    import pandas as pd

    qc_path = root / "derivatives/ldae-preproc/qc.tsv"
    qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
    last_val = (qc.participant_id == "sub-ADNI006") & (qc.session_id == "ses-M012")
    qc.loc[last_val, ["status", "reason", "preproc"]] = ["excluded", "test: odd validation count", ""]
    qc.to_csv(qc_path, sep="\t", index=False)
    return root
