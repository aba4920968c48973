"""`ldae demo-summary`: wall time per stage/rule from a benchmarks folder, and the files to open first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ldae import demo_summary
from ldae.evaluation.probes import TRIVIAL_ROW

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
REPO = Path(__file__).resolve().parents[1]


def _bench(path: Path, seconds: list[float], end: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t100\t1\t1\t1\t0\t0\t50\t{s}\n" for s in seconds))
    os.utime(path, (end, end))


@pytest.fixture
def run(tmp_path) -> Path:
    out = tmp_path / "demo"
    b = out / "benchmarks"
    _bench(b / "synthesize_adni.tsv", [120.5], end=1000.0)
    _bench(b / "sessions.tsv", [3.0], end=1010.0)
    _bench(b / "preprocess" / "sub-A_ses-M000.tsv", [20.0], end=1100.0)
    _bench(b / "preprocess" / "sub-A_ses-M006.tsv", [25.0], end=1110.0)
    _bench(b / "train_ldae.tsv", [3000.0, 600.0], end=5000.0)  # two lines (repeats) add up
    _bench(b / "mystery.tsv", [1.0], end=5001.0)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "data.smk").write_text("rule synthesize_adni:\n    shell: 'x'\n\ncheckpoint sessions:\n    shell: 'y'\n")
    (rules / "preprocess.smk").write_text("rule preprocess:\n    shell: 'x'\n")
    (rules / "train.smk").write_text("# rule not_a_rule: in a comment\nrule train_ldae:\n    shell: 'x'\n")
    (out / "results" / "figures").mkdir(parents=True)
    (out / "report.html").write_text("<html/>")
    (out / "results" / "figures" / "figure5_lda.png").write_bytes(b"png")
    return tmp_path


def test_sums_per_rule_and_stage(run):
    stages = demo_summary.rule_stages(run / "rules")
    assert stages == {"synthesize_adni": "data", "sessions": "data", "preprocess": "preprocess", "train_ldae": "train"}
    bench = demo_summary.read_benchmarks(run / "demo" / "benchmarks")
    table = demo_summary.summarise(bench, stages)
    assert list(table.stage) == ["data", "data", "preprocess", "train", "other"]
    seconds = dict(zip(table.rule, table.seconds))
    assert seconds == {
        "synthesize_adni": 120.5,
        "sessions": 3.0,
        "preprocess": 45.0,
        "train_ldae": 3600.0,
        "mystery": 1.0,
    }
    assert dict(zip(table.rule, table.jobs))["preprocess"] == 2
    assert demo_summary.elapsed_seconds(bench) == pytest.approx(5001.0 - (1000.0 - 120.5))
    back_to_back = bench.assign(end=bench.seconds.cumsum() + 100.0)  # one job after the other, no gaps
    assert demo_summary.elapsed_seconds(back_to_back) == pytest.approx(bench.seconds.sum())
    text = demo_summary.render(table, demo_summary.elapsed_seconds(back_to_back), [])
    assert "elapsed" in text and "1:02:50" in text


def test_cli_prints_stages_and_files(run, capsys):
    from ldae import cli

    assert cli.main(["demo-summary", "--out-dir", str(run / "demo"), "--rules", str(run / "rules")]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert any(line.split()[:2] == ["data", "0:02:04"] for line in lines)  # 120.5 + 3.0 s
    assert any(line.split()[:3] == ["preprocess", "0:00:45", "(2"] for line in lines)
    assert any(line.split()[:2] == ["train_ldae", "1:00:00"] for line in lines)
    opened = lines[lines.index("Open first:") + 1 :]
    assert opened[0].startswith(f"  1. {run / 'demo' / 'report.html'}  - ") and "missing" not in opened[0]
    assert opened[1].startswith(f"  2. {run / 'demo' / 'results' / 'README.md'}  - ") and "(missing" in opened[1]
    figure = run / "demo" / "results" / "figures" / "figure5_lda.png"  # figure 6 absent: the next one
    assert opened[2].startswith(f"  3. {figure}  - ") and "missing" not in opened[2]
    assert "n/a" in text  # the fake jobs leave idle gaps: not one run, no elapsed time claimed


def test_cli_writes_the_numbers_as_json(run, tmp_path):
    from ldae import cli

    out = tmp_path / "record.json"
    args = ["demo-summary", "--out-dir", str(run / "demo"), "--rules", str(run / "rules"), "--json", str(out)]
    assert cli.main(args) == 0
    record = json.loads(out.read_text())
    assert record["stages"]["data"] == pytest.approx(123.5) and record["stages"]["preprocess"] == pytest.approx(45.0)
    assert record["rules"]["train_ldae"] == {"seconds": 3600.0, "jobs": 1}
    assert record["jobs_seconds"] == pytest.approx(sum(r["seconds"] for r in record["rules"].values()), abs=0.5)
    assert {t["target"] for t in record["targets"]} >= {"AutoencoderKL test SSIM"}


def test_missing_or_broken_benchmarks_are_explained(tmp_path, capsys):
    assert demo_summary.main(["--out-dir", str(tmp_path / "nothing")]) == 1
    assert "run the workflow first" in capsys.readouterr().err
    bad = tmp_path / "demo" / "benchmarks" / "x.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("a\tb\n1\t2\n")
    assert demo_summary.main(["--out-dir", str(tmp_path / "demo")]) == 1
    assert "x.tsv: no 's' column" in capsys.readouterr().err


def test_every_benchmarked_rule_of_the_workflow_has_a_stage():
    stages = demo_summary.rule_stages(REPO / "workflow" / "rules")
    import re

    benchmarked = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        benchmarked |= set(re.findall(r'bench_file\("(\w+)"', smk.read_text()))
    assert benchmarked and benchmarked <= set(stages)
    assert {stages[r] for r in ("synthesize_adni", "preprocess", "train_ldae", "train_dae", "probe")} == {
        "data",
        "preprocess",
        "train",
        "baselines",
        "evaluate",
    }


def _tables(out: Path, ae_ssim: float, ldae_ssim: float, auc_low: float, mae: float, moves: tuple[float, float]):
    """Result tables as the evaluation writes them (only the columns the targets read)."""
    tables = out / "results" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "table6_reconstruction.tsv").write_text(
        "Model\tEncoding\tT\tSSIM\n"
        f"AutoencoderKL\t-\t-\t{ae_ssim}\n"
        "LDAE\t(b) y_sem + encoded x_T\t10\t0.10\n"
        f"LDAE\t(b) y_sem + encoded x_T\t100\t{ldae_ssim}\n"
        "LDAE\t(a) y_sem + noise x_T\t100\t0.99\n"
    )
    (tables / "table7_linear_probes.tsv").write_text(
        f"Model\tROC-AUC\tROC-AUC_ci_low\tMAE\nLDAE\t0.90\t{auc_low}\t{mae}\n{TRIVIAL_ROW}\t0.5\t0.5\t4.0\n"
    )
    # CN scan moved towards AD, AD scan towards CN; p = probability of CN
    cn_to_ad, ad_to_cn = moves
    (tables / "figure67_manipulation.tsv").write_text(
        "participant_id\tsession_id\tdiagnosis\ttowards\tpositive_class\tscale\tp_positive_decoded\n"
        "s1\tM0\tCN\tAD\tCN\t5.0\t" + str(0.8 - cn_to_ad) + "\n"
        "s1\tM0\tCN\tAD\tCN\t0.0\t0.8\n"
        "s2\tM0\tAD\tCN\tCN\t0.0\t0.3\n"
        "s2\tM0\tAD\tCN\tCN\t5.0\t" + str(0.3 + ad_to_cn) + "\n"
    )


def test_targets_read_from_the_result_tables(tmp_path):
    out = tmp_path / "demo"
    _tables(out, ae_ssim=0.90, ldae_ssim=0.89, auc_low=0.62, mae=3.0, moves=(0.30, 0.26))
    met = {t["target"]: t["met"] for t in demo_summary.demo_targets(out)}
    assert met == {
        "AutoencoderKL test SSIM": True,
        "LDAE (b) SSIM vs the autoencoder": True,  # the largest T (100), not T = 10
        "LDAE AD-vs-CN ROC-AUC": True,
        "LDAE age MAE vs the mean-age baseline": True,  # 3.0 / 4.0 = 0.75
        "manipulation CN -> AD": True,  # p(CN) falls by 0.30: towards AD
        "manipulation AD -> CN": True,
    }
    _tables(out, ae_ssim=0.80, ldae_ssim=0.75, auc_low=0.45, mae=3.4, moves=(-0.30, 0.20))
    met = {t["target"]: t["met"] for t in demo_summary.demo_targets(out)}
    assert not any(met.values())  # SSIM < 0.85, gap 0.05, lower bound < 0.5, ratio 0.85, wrong way, 0.20 < 0.25
    text = demo_summary.render_targets(demo_summary.demo_targets(out))
    assert "0.800" in text and "NOT met" in text and "ratio 0.85" in text


def test_targets_without_results_are_not_measured(tmp_path):
    targets = demo_summary.demo_targets(tmp_path / "nothing")
    assert targets and all(t["met"] is None for t in targets)
    assert "not measured" in demo_summary.render_targets(targets)
