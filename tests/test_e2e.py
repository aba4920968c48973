"""The tiny end-to-end run: the whole workflow on the CI config (synthetic download -> real clinica -> ...
-> every final target), then checks of what it produced against the generator's ground truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.rules import ACTION_RULES

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "ci-output"
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/default",
        "--cores",
        "2",
        "--configfile",
        "tests/configs/ci.yaml",
        "--config",
        f"out_dir={out}",
    ]
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
        zip(expected.participant_id, expected.session_id)
    )
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


# Rules of Snakefile + workflow/rules/*.smk that the CI config's DAG does not hold, and why. Every other rule that
# runs something (ACTION_RULES: all but target rules such as `all`) must have run.
NOT_IN_THE_CI_RUN = {
    "import_official": "workflow/rules/pretrained.smk is included only with a `pretrained:` section; the CI run trains "
    "every stage itself (tests/test_import_official.py dry-runs the rule)",
    "validate_bids": "only with data.source: bids and data.bids.validate; the CI data are ADNI (tests/test_e2e_bids.py "
    "runs it)",
}


def every_rule() -> tuple[str, ...]:
    stale = set(NOT_IN_THE_CI_RUN) - set(ACTION_RULES)
    assert not stale, f"NOT_IN_THE_CI_RUN names rules the rule files no longer define: {sorted(stale)}"
    return tuple(rule for rule in ACTION_RULES if rule not in NOT_IN_THE_CI_RUN)


EVERY_RULE = every_rule()


def test_every_rule_ran_logged_and_benchmarked(run):
    """Every rule of the workflow ran in the tiny run (its log and benchmark exist: flat or per wildcard)."""
    out, _ = run
    for rule in EVERY_RULE:
        for kind, ext in (("logs", ".log"), ("benchmarks", ".tsv")):
            flat, nested = out / kind / f"{rule}{ext}", out / kind / rule
            assert flat.is_file() or any(nested.rglob(f"*{ext}")), f"{rule}: no {kind}"


def test_every_paper_table_and_figure(run):
    out, _ = run
    from ldae import outputs

    for stem in outputs.TABLES:
        table = pd.read_csv(outputs.table(out, stem), sep="\t")
        assert len(table) > 0, stem
        assert Path(outputs.table(out, stem, "md")).read_text().strip(), stem
    for name in outputs.FIGURES:
        assert Path(outputs.figure(out, name)).read_bytes()[:4] == b"\x89PNG", name
    probes = pd.read_csv(outputs.table(out, outputs.TABLE7), sep="\t")
    assert {"LDAE", "DAE"} <= set(probes.iloc[:, 0]), probes
    readme = Path(outputs.results_readme(out)).read_text()
    assert "Table 7" in readme and "Table 6" in readme and "Table 5" in readme


def test_preprocessing_qc_covers_every_session(run):
    out, _ = run
    sessions = pd.read_csv(out / "tables/sessions.tsv", sep="\t")
    qc = pd.read_csv(out / "derivatives/ldae-preproc/qc.tsv", sep="\t")
    assert set(zip(qc.participant_id, qc.session_id)) == set(
        zip(
            "sub-" + sessions.participant_id.str.replace("sub-", ""),
            "ses-" + sessions.session_id.str.replace("ses-", ""),
        )
    )
    assert (qc.status == "pass").mean() >= 0.8, qc[["participant_id", "session_id", "status", "reason"]]


def test_models_written(run):
    out, _ = run
    for stage in ("autoencoder", "ldm", "ldae", "dae", "supervised_ad", "supervised_age"):
        assert (out / "models" / stage / "weights.pt").stat().st_size > 0, stage
    assert (out / "models" / "latents" / "scale.json").is_file()
