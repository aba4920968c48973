"""End to end from an existing BIDS dataset (data.source: bids) in a non-ADNI layout (OASIS-3 style, see
bids_cohort.py), with the CI config's sizes: session table -> splits -> preprocessing -> the first training stage
(explicit targets, not the whole chain: the later stages read only the preprocessed images and tables, which the
CI run covers), plus the optional BIDS validator. The dataset is read-only and must come out unchanged; reruns
follow config sections as for the other sources."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ldae.data import synth, validate_bids

from helpers import bids_cohort
from helpers.bids_cohort import LAYOUT, NO_DIAGNOSIS, TWO_RUNS

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "tests/configs/ci.yaml"
pytestmark = pytest.mark.slow


def snakemake(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/default", "--cores", "2", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def jobs_of(dry_run_stdout: str) -> dict[str, list[str]]:
    jobs, current = {}, None
    for line in dry_run_stdout.splitlines():
        header = re.match(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if header:
            current = header.group(1)
            jobs.setdefault(current, [])
        elif current and line.strip().startswith("reason:"):
            jobs[current].append(line.strip())
    return jobs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-bids")
    download = synth.generate(tmp / "download", len(bids_cohort.SUBJECTS), min_visits=2, max_visits=2, voxel_mm=4.0,
                              seed=1, repeat_prob=0.3)  # fmt: skip
    cohort = bids_cohort.write_cohort(tmp / "oasis", bids_cohort.synthetic_images(download))
    before = bids_cohort.tree_state(cohort)
    out = tmp / "out"
    config = tmp / "bids.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "out_dir": str(out),
                "data": {"source": "bids", "bids_dir": str(cohort), "bids": {**LAYOUT, "validate": True}},
            }
        )
    )
    targets = [str(out / p) for p in ("tables/splits.tsv", "derivatives/ldae-preproc/qc.tsv",
                                      "derivatives/ldae-preproc/dataset_description.json", "models/autoencoder",
                                      "work/bids_validation.json")]  # fmt: skip
    args = ["--configfile", str(CI), str(config)]
    bids_cohort.make_read_only(cohort)
    try:
        result = snakemake(*targets, *args)  # --configfile takes every path after it: targets first
        if result.returncode != 0:
            logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((out / "logs").rglob("*.log")))
            pytest.fail(f"workflow failed:\n{result.stderr[-6000:]}\n{logs[-12000:]}")
        yield {"out": out, "cohort": cohort, "before": before, "args": args, "targets": targets, "tmp": tmp}
    finally:
        bids_cohort.make_writable(cohort)


def test_session_table_points_into_the_input_dataset(run):
    out, cohort = run["out"], run["cohort"]
    sessions = pd.read_csv(out / "tables/sessions.tsv", sep="\t")
    assert len(sessions) == 9 and NO_DIAGNOSIS not in set(zip(sessions.participant_id, sessions.session_id))
    for path in sessions.t1w:
        assert (cohort / path).is_file() and not (out / "bids").exists()
    assert sessions.set_index("participant_id").loc[TWO_RUNS].t1w.str.contains("run-1").any()
    excluded = pd.read_csv(out / "tables/excluded_sessions.tsv", sep="\t")
    assert len(excluded) == 2 and excluded.reason.str.contains("another T1w|no diagnosis").all()
    splits = pd.read_csv(out / "tables/splits.tsv", sep="\t")
    assert set(splits.participant_id) == set(sessions.participant_id)
    assert {"train", "val", "test"} <= set(splits.split)


def test_preprocessing_and_first_stage_ran(run):
    out = run["out"]
    sessions = pd.read_csv(out / "tables/sessions.tsv", sep="\t")
    qc = pd.read_csv(out / "derivatives/ldae-preproc/qc.tsv", sep="\t")
    assert set(zip(qc.participant_id, qc.session_id)) == set(zip(sessions.participant_id, sessions.session_id))
    assert (qc.status == "pass").mean() >= 0.8, qc[["participant_id", "session_id", "status", "reason"]]
    description = json.loads((out / "derivatives/ldae-preproc/dataset_description.json").read_text())
    source = (out / "derivatives/ldae-preproc" / description["SourceDatasets"][0]["URL"]).resolve()
    assert source == run["cohort"].resolve()  # the input dataset, recorded relative to the derivatives
    assert (out / "models/autoencoder/weights.pt").stat().st_size > 0


def test_the_input_dataset_is_unchanged(run):
    assert bids_cohort.tree_state(run["cohort"]) == run["before"]


def test_validator_report(run):
    report = pd.read_json(run["out"] / "work/bids_validation.json", typ="series")
    if validate_bids.find_validator() is None:
        assert report["validator"] is None
    else:
        assert report["errors"] == 0, report.to_dict()  # the test cohort is valid BIDS


def test_reruns_follow_config_sections(run):
    args, targets, tmp = run["args"], run["targets"], run["tmp"]
    dry = snakemake("-n", *targets, *args, timeout=600)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]

    def changed(name, section):
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(section))
        result = snakemake("-n", *targets, *args, str(path), timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return jobs_of(result.stdout)

    remap = {"data": {"bids": {"diagnosis": {"values": {**LAYOUT["diagnosis"]["values"], "CDR 0.5": "AD"}}}}}
    jobs = changed("remap", remap)
    assert any("Params have changed" in r for r in jobs.get("sessions", [])), jobs
    assert "validate_bids" not in jobs and "splits" in jobs
    assert not changed("no-validation", {"data": {"bids": {"validate": False}}})
    jobs = changed("seed", {"splits": {"seed": 7}})
    assert "splits" in jobs and "sessions" not in jobs and "preprocess" not in jobs
