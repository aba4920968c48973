"""The tiny end-to-end run: the whole workflow on the CI config (synthetic download -> real clinica -> ...
-> every final target), then checks of what it produced against the generator's ground truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "ci-output"
    command = [sys.executable, "-m", "snakemake", "--profile", "profiles/default", "--cores", "2",
               "--configfile", "tests/configs/ci.yaml", "--config", f"out_dir={out}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((out / "logs").rglob("*.log")))
        pytest.fail(f"workflow failed:\n{result.stderr[-6000:]}\n{logs[-12000:]}")
    return out, command


def test_every_target_is_up_to_date(run):
    out, command = run
    dry = subprocess.run(command + ["-n"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_session_table_matches_planted_truth(run):
    out, _ = run
    sessions = pd.read_csv(out / "tables/sessions.tsv", sep="\t")
    truth = pd.read_csv(out / "raw/truth/images.tsv", sep="\t")
    expected = truth[truth.expected_in_bids.astype(str) == "True"]
    assert set(zip(sessions.participant_id, sessions.session_id)) == set(
        zip(expected.participant_id, expected.session_id))
    merged = sessions.merge(expected, on=["participant_id", "session_id"], suffixes=("", "_truth"))
    assert (merged.diagnosis == merged.diagnosis_truth).all()
    assert (merged.age - merged.age_truth).abs().max() < 0.1
    for path in sessions.t1w:
        assert (out / "bids" / path).is_file()


def test_splits_cover_every_subject_once(run):
    out, _ = run
    sessions = pd.read_csv(out / "tables/sessions.tsv", sep="\t")
    splits = pd.read_csv(out / "tables/splits.tsv", sep="\t")
    assert splits.participant_id.is_unique
    assert set(splits.participant_id) == set(sessions.participant_id)
    assert {"train", "val", "test"} <= set(splits.split)


def test_every_rule_logged_and_benchmarked(run):
    out, _ = run
    for rule in ("synthesize_adni", "adni_to_bids", "sessions", "splits"):
        assert (out / "logs" / f"{rule}.log").is_file()
        assert (out / "benchmarks" / f"{rule}.tsv").is_file()
