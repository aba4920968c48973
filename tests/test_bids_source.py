"""`data.source: bids`: the session table from a BIDS cohort in a non-ADNI layout (columns, value map and time
named by config data.bids), the T1w choice among runs/acquisitions, the exclusions, splits, the validator rule
and the workflow's wiring (dry runs). The dataset is only read."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from ldae.data import sessions as sessions_mod
from ldae.data import splits as splits_mod
from ldae.data import validate_bids
from ldae.data.bids_layout import CLINICA_LAYOUT, Layout
from ldae.data.tables import TableError, read_sessions

from helpers import bids_cohort
from helpers.bids_cohort import LAYOUT, NO_DIAGNOSIS, TWO_RUNS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def cohort(tmp_path):
    return bids_cohort.write_cohort(tmp_path / "oasis")


def build(root, layout=LAYOUT, **kwargs):
    return sessions_mod.build_session_table(root, layout=Layout.from_config(layout), **kwargs)


def reasons(excluded):
    return {(r.participant_id, r.session_id, Path(r.path).name if isinstance(r.path, str) else ""): r.reason
            for r in excluded.itertuples()}  # fmt: skip


def with_layout(**changes):
    layout = copy.deepcopy(LAYOUT)
    for key, value in changes.items():
        layout[key] = {**layout.get(key, {}), **value} if isinstance(value, dict) else value
    return layout


def test_schema_defaults_are_clinicas_layout():
    """data.bids defaults describe clinica's output, so a site-wide clinica BIDS dataset needs no mapping."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"]["bids"] = {}
    validate(config, str(SCHEMA))
    filled = {k: v for k, v in config["data"]["bids"].items() if k != "validate"}
    assert filled == CLINICA_LAYOUT
    shipped = {k: v for k, v in yaml.safe_load((ROOT / "config.yaml").read_text())["data"]["bids"].items()
               if k != "validate"}  # fmt: skip
    assert shipped == CLINICA_LAYOUT


def test_non_adni_cohort_sessions_and_splits(cohort, tmp_path):
    out, excl = tmp_path / "t" / "sessions.tsv", tmp_path / "t" / "excluded.tsv"
    rc = sessions_mod.main(["--bids-dir", str(cohort), "--out", str(out), "--excluded", str(excl),
                            "--layout-json", json.dumps(LAYOUT)])  # fmt: skip
    assert rc == 0
    table, excluded = read_sessions(out), pd.read_csv(excl, sep="\t")
    assert len(table) == 9 and (TWO_RUNS, "ses-01") in set(zip(table.participant_id, table.session_id))
    assert NO_DIAGNOSIS not in set(zip(table.participant_id, table.session_id))
    row = table.set_index(["participant_id", "session_id"])
    assert row.loc[("sub-OAS30001", "ses-02"), "months"] == 18  # (71.5 - 70.0) years from the ages
    assert row.loc[("sub-OAS30003", "ses-02"), "months"] == 24 and row.loc[("sub-OAS30003", "ses-01"), "months"] == 0
    assert row.loc[("sub-OAS30005", "ses-02"), "age"] == pytest.approx(81.0)
    assert dict(zip(table.participant_id, table.diagnosis)) == {
        "sub-OAS30001": "CN",
        "sub-OAS30002": "AD",
        "sub-OAS30003": "MCI",
        "sub-OAS30004": "CN",
        "sub-OAS30005": "AD",
    }
    assert set(table.sex) == {"F", "M"}
    assert row.loc[(TWO_RUNS, "ses-01"), "t1w"] == f"{TWO_RUNS}/ses-01/anat/{TWO_RUNS}_ses-01_run-1_T1w.nii.gz"
    why = reasons(excluded)
    assert len(why) == 2
    assert "another T1w of the session was chosen" in why[(TWO_RUNS, "ses-01", f"{TWO_RUNS}_ses-01_run-2_T1w.nii.gz")]
    no_dx = why[(*NO_DIAGNOSIS, f"{NO_DIAGNOSIS[0]}_{NO_DIAGNOSIS[1]}_T1w.nii.gz")]
    assert "no diagnosis" in no_dx and "'clinical_dx'" in no_dx and "data.bids.diagnosis.column" in no_dx
    splits = splits_mod.make_splits(table, seed=42)
    assert set(splits.participant_id) == set(table.participant_id) and {"train", "val", "test"} <= set(splits.split)
    assert splits.set_index("participant_id").loc["sub-OAS30003", "baseline_diagnosis"] == "MCI"


def test_run_rule_acquisition_preference_and_unreadable_fallback(cohort):
    table, _ = build(cohort, with_layout(t1w={"run": "last"}))
    assert table.set_index("participant_id").loc[TWO_RUNS].t1w.iloc[0].endswith("run-2_T1w.nii.gz")
    anat = cohort / "sub-OAS30001" / "ses-01" / "anat"
    for acq in ("mprage", "spgr"):
        nib.save(bids_cohort.tiny_image(7), str(anat / f"sub-OAS30001_ses-01_acq-{acq}_T1w.nii.gz"))
    pick = lambda t: t.set_index(["participant_id", "session_id"]).loc[("sub-OAS30001", "ses-01"), "t1w"]  # noqa: E731
    assert pick(build(cohort)[0]).endswith("ses-01_T1w.nii.gz")  # no preference: no acq- first
    table, excluded = build(cohort, with_layout(t1w={"acquisition": ["spgr", "mprage"]}))
    assert pick(table).endswith("acq-spgr_T1w.nii.gz")
    assert sum("acq-spgr" in r for r in excluded.reason) == 2  # the two others name the chosen one
    (anat / "sub-OAS30001_ses-01_acq-spgr_T1w.nii.gz").write_bytes(b"broken")
    table, excluded = build(cohort, with_layout(t1w={"acquisition": ["spgr", "mprage"]}))
    assert pick(table).endswith("acq-mprage_T1w.nii.gz")
    assert any("unreadable NIfTI" in r for r in excluded.reason)


@pytest.mark.parametrize(
    "time, edit, expected",
    [
        ({"source": "column", "column": "days", "unit": "days"}, "days", 24),
        ({"source": "acq_time"}, None, 24),
        ({"source": "acq_time"}, "scans", 24),
        ({"source": "session_label", "pattern": "^(\\d+)$", "unit": "years"}, None, 12),
    ],
    ids=["days-column", "acq_time-sessions", "acq_time-scans", "label-years"],
)
def test_time_sources(cohort, time, edit, expected):
    path = cohort / "sub-OAS30003" / "sub-OAS30003_sessions.tsv"
    frame = pd.read_csv(path, sep="\t")
    if edit == "days":
        for sessions_tsv in cohort.glob("sub-*/sub-*_sessions.tsv"):
            other = pd.read_csv(sessions_tsv, sep="\t")
            other.assign(days=[0, 731] if sessions_tsv == path else [0, 365]).to_csv(
                sessions_tsv, sep="\t", index=False
            )
    if edit == "scans":  # acq_time only in scans.tsv (BIDS: per file)
        frame.drop(columns=["acq_time"]).to_csv(path, sep="\t", index=False)
        for ses, stamp in zip(frame.session_id, frame.acq_time):
            scans = cohort / "sub-OAS30003" / ses / f"sub-OAS30003_{ses}_scans.tsv"
            pd.DataFrame({"filename": [f"anat/sub-OAS30003_{ses}_T1w.nii.gz"], "acq_time": [stamp]}).to_csv(
                scans, sep="\t", index=False
            )
    table, _ = build(cohort, with_layout(time=time))
    row = table.set_index(["participant_id", "session_id"])
    assert row.loc[("sub-OAS30003", "ses-02"), "months"] - row.loc[("sub-OAS30003", "ses-01"), "months"] == expected


def test_time_missing_or_label_not_matching_is_an_exclusion(cohort):
    table, excluded = build(cohort, with_layout(time={"source": "session_label", "pattern": "^M(\\d+)$"}))
    timeless = excluded[~excluded.reason.str.startswith("another T1w")]
    assert table.empty and len(timeless) == 10
    assert all(r.startswith("no time: session label") and "data.bids.time" in r for r in timeless.reason)


def test_every_missing_column_in_one_message(cohort):
    layout = with_layout(sex="sex", age={"column": "age", "baseline_column": "age_at_entry"},
                         time={"source": "column", "column": "visit_months"})  # fmt: skip
    with pytest.raises(TableError) as error:
        build(cohort, layout)
    message = str(error.value)
    for expected in ("participants.tsv: column(s) 'sex' (config data.bids.sex), 'age_at_entry' "
                     "(config data.bids.age.baseline_column)", "column 'age' (config data.bids.age.column) missing "
                     "from 5 sessions.tsv", "column 'visit_months' (config data.bids.time.column)"):  # fmt: skip
        assert expected in message, message


def test_unmapped_value_and_participants_diagnosis(cohort):
    layout = copy.deepcopy(LAYOUT)
    del layout["diagnosis"]["values"]["CDR 0.5"]
    table, excluded = build(cohort, layout)
    assert "sub-OAS30003" not in set(table.participant_id)
    assert any("'CDR 0.5' is not mapped to CN/MCI/AD (config data.bids.diagnosis.values)" in r for r in excluded.reason)
    participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
    participants.assign(dx=["CN", "AD", "MCI", " 0.50", "AD"]).to_csv(cohort / "participants.tsv", sep="\t",
                                                                            index=False)  # fmt: skip
    layout = with_layout(
        diagnosis={"participants_column": "dx", "values": {**LAYOUT["diagnosis"]["values"], 0.5: "MCI"}}
    )
    table, _ = build(cohort, layout)
    assert table.set_index(["participant_id", "session_id"]).loc[NO_DIAGNOSIS, "diagnosis"] == "MCI"  # '0.50' == 0.5


def test_nearest_diagnosis_and_sessionless_image(cohort):
    table, _ = build(cohort, diagnosis_missing="nearest")
    assert table.set_index(["participant_id", "session_id"]).loc[NO_DIAGNOSIS, "diagnosis"] == "CN"
    anat = cohort / "sub-OAS30006" / "anat"
    anat.mkdir(parents=True)
    nib.save(bids_cohort.tiny_image(3), str(anat / "sub-OAS30006_T1w.nii.gz"))
    _, excluded = build(cohort)
    assert any(r.participant_id == "sub-OAS30006" and "no ses- entity" in r.reason for r in excluded.itertuples())


def test_the_dataset_is_only_read(cohort, tmp_path):
    before = bids_cohort.tree_state(cohort)
    bids_cohort.make_read_only(cohort)
    try:
        rc = sessions_mod.main(["--bids-dir", str(cohort), "--out", str(tmp_path / "s.tsv"), "--excluded",
                                str(tmp_path / "e.tsv"), "--layout-json", json.dumps(LAYOUT)])  # fmt: skip
        assert rc == 0
        assert validate_bids.main(["--bids-dir", str(cohort), "--out", str(tmp_path / "v.json")]) == 0
    finally:
        bids_cohort.make_writable(cohort)
    assert bids_cohort.tree_state(cohort) == before


def test_layout_config_errors_name_the_key():
    with pytest.raises(ValueError, match="data.bids.time.column"):
        Layout.from_config({"time": {"source": "column"}})
    with pytest.raises(ValueError, match="data.bids: unknown key"):
        Layout.from_config({"diagnosys": {}})
    with pytest.raises(ValueError, match="data.bids.time.pattern"):
        Layout.from_config({"time": {"pattern": "^M\\d+$"}})


def test_validator_findings_are_reported_not_fatal(cohort, tmp_path):
    report = tmp_path / "v.json"
    if validate_bids.find_validator() is None:
        pytest.skip("bids-validator-deno is not installed (test extras)")
    (cohort / "sub-OAS30001" / "ses-01" / "anat" / "sub-OAS30001_ses-01_bogus-x_T1w.nii.gz").write_bytes(b"x")
    assert validate_bids.main(["--bids-dir", str(cohort), "--out", str(report)]) == 0
    summary = json.loads(report.read_text())
    assert summary["errors"] >= 1 and summary["validator"]
    assert any("bogus" in str(example["location"]) for example in summary["examples"])


# ---------------------------------------------------------------- the workflow's wiring (dry runs)
def dry_run(tmp_path, data: dict, *extra):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "out"), "data": data}))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           str(ROOT / "tests/configs/ci.yaml"), str(override), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_dry_run_starts_from_the_bids_dataset(cohort, tmp_path):
    result = dry_run(tmp_path, {"source": "bids", "bids_dir": str(cohort), "bids": {**LAYOUT, "validate": True}})
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("sessions", "splits", "validate_bids"):
        assert f"rule {rule}:" in result.stdout or f"checkpoint {rule}:" in result.stdout, rule
    assert "adni_to_bids" not in result.stdout + result.stderr and "rule synthesize_adni:" not in result.stdout


@pytest.mark.slow
def test_blank_bids_dir_names_the_key(tmp_path):
    result = dry_run(tmp_path, {"source": "bids", "bids_dir": ""})
    assert result.returncode != 0 and "data.bids_dir" in result.stdout + result.stderr


def test_readme_oasis_example_is_a_valid_config():
    """The README's OASIS-3 style example validates and reads ses-d0129 as 129 days."""
    import re

    block = re.search(r"```yaml\n(data:\n  source: bids.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"] = yaml.safe_load(block)["data"]
    validate(config, str(SCHEMA))
    layout = Layout.from_config(config["data"]["bids"])
    assert layout.label_months("ses-d0129") == pytest.approx(129 * 12 / 365.25)
    assert layout.diagnosis_map()[("text", "AD DEMENTIA")] == "AD"
