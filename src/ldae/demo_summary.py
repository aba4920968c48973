"""`ldae demo-summary`: what `make demo` prints at the end - wall time per stage and rule (from the Snakemake
benchmark files under <out_dir>/benchmarks/), whether the run shows what the demo is meant to show (the targets
below, read from <out_dir>/results/tables/) and the three files to open first.

Snakemake writes one benchmark TSV per job (`benchmark:` directive; column `s` = wall-clock seconds):
<out_dir>/benchmarks/<rule>.tsv or <out_dir>/benchmarks/<rule>/<wildcards>.tsv. A rule's stage is the rule file
that defines it (workflow/rules/<stage>.smk). Jobs may run side by side, so the sums can exceed the elapsed time,
which is given separately (first job start to last job end, from the files' modification times).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from ldae.files import write_json

# opened first, in this order (path under out_dir: what it shows); the figure is the first of FIGURES that exists
FIRST_FILES = {
    "report.html": "every table and figure with its caption (Snakemake report)",
    "results/README.md": "our numbers beside the paper's, table by table",
}
FIGURES = {
    "results/figures/figure6_manipulation_cn.png": "a CN test scan moved along the probe's AD direction (Figure 6)",
    "results/figures/figure5_lda.png": "the test embeddings, AD vs CN, on a 2-D LDA (Figure 5)",
    "results/figures/table6_examples.png": "reconstructions beside the input (Table 6)",
}
# What a demo run should show on its test split (bench/README.md#demo records the runs):
AE_SSIM_MIN = 0.85  # the autoencoder reconstructs well (Table 6)
LDAE_SSIM_GAP = 0.02  # LDAE (b) at the largest T within this of the autoencoder (Table 6)
AUC_MIN = 0.85  # LDAE AD-vs-CN ROC-AUC, with the lower 95 % bound above 0.5 (Table 7)
AGE_MAE_RATIO = 0.8  # LDAE age MAE at most this x the probe_train-mean baseline (Table 7)
MANIPULATION_MOVE = 0.25  # re-encoded probe probability moves this far the intended way, s = 0 -> max (Figures 6-7)
RULE_LINE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)


def rule_stages(rules_dir: str | Path) -> dict[str, str]:
    """rule name -> stage (the stem of the .smk file under `rules_dir` that defines it)."""
    stages = {}
    for path in sorted(Path(rules_dir).glob("*.smk")):
        for name in RULE_LINE.findall(path.read_text()):
            stages[name] = path.stem
    return stages


def read_benchmarks(bench_dir: str | Path) -> pd.DataFrame:
    """One row per benchmark file: rule, job (wildcards part of the path), seconds, end (file mtime)."""
    bench_dir = Path(bench_dir)
    rows = []
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        try:
            table = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
            raise ValueError(f"{path}: not a Snakemake benchmark file ({error}); delete it and rerun") from None
        if "s" not in table.columns:
            raise ValueError(f"{path}: no 's' column (wall-clock seconds); delete it and rerun")
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        rows.append(
            {
                "rule": rule,
                "job": str(rel.with_suffix("")),
                "seconds": float(table["s"].sum()),
                "end": path.stat().st_mtime,
            }
        )
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "end"])


def summarise(bench: pd.DataFrame, stages: dict[str, str]) -> pd.DataFrame:
    """Seconds and job counts per (stage, rule), stages in pipeline order, rules by their first finish."""
    order = ["data", "preprocess", "train", "baselines", "evaluate"]
    bench = bench.assign(stage=[stages.get(r, "other") for r in bench.rule])
    per_rule = bench.groupby(["stage", "rule"], as_index=False).agg(
        seconds=("seconds", "sum"), jobs=("job", "count"), first_end=("end", "min")
    )
    rank = {s: i for i, s in enumerate(order)}
    per_rule["_stage"] = [rank.get(s, len(order)) for s in per_rule.stage]
    return per_rule.sort_values(["_stage", "first_end"]).drop(columns=["_stage", "first_end"]).reset_index(drop=True)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def elapsed_seconds(bench: pd.DataFrame) -> float:
    """First job start (end - seconds) to last job end."""
    return float(bench.end.max() - (bench.end - bench.seconds).min()) if len(bench) else 0.0


def files_to_open(out_dir: str | Path) -> list[tuple[str, str, bool]]:
    """The three files to open first: (path, what it shows, whether it exists)."""
    out_dir = Path(out_dir)
    figure = next((f for f in FIGURES if (out_dir / f).exists()), next(iter(FIGURES)))
    chosen = {**FIRST_FILES, figure: FIGURES[figure]}
    return [(str(out_dir / f), what, (out_dir / f).exists()) for f, what in chosen.items()]


def render(per_rule: pd.DataFrame, elapsed: float, files: list[tuple[str, str, bool]]) -> str:
    lines = ["Wall time per stage and rule (sum of the jobs' benchmark seconds):"]
    width = max([len(r) for r in per_rule.rule] + [10])
    for stage, rules in per_rule.groupby("stage", sort=False):
        lines.append(f"  {stage:<{width + 2}} {hms(rules.seconds.sum()):>9}  ({int(rules.jobs.sum())} jobs)")
        for row in rules.itertuples():
            lines.append(f"    {row.rule:<{width}} {hms(row.seconds):>9}  ({row.jobs} job{'s' * (row.jobs != 1)})")
    lines.append(f"  {'all jobs':<{width + 2}} {hms(per_rule.seconds.sum()):>9}")
    if elapsed <= per_rule.seconds.sum() + 60:
        lines.append(f"  {'elapsed':<{width + 2}} {hms(elapsed):>9}  (first job start to last job end; jobs overlap)")
    else:  # idle time between jobs: the files come from more than one run (a partial rerun)
        lines.append(f"  {'elapsed':<{width + 2}} {'n/a':>9}  (the benchmark files come from more than one run)")
    lines += ["", "Open first:"]
    for i, (path, what, exists) in enumerate(files, start=1):
        lines.append(f"  {i}. {path}  - {what}" + ("" if exists else " (missing: that part of the run failed)"))
    return "\n".join(lines)


def as_record(per_rule: pd.DataFrame, elapsed: float, targets: list[dict]) -> dict:
    """The summary as one JSON-able record (bench/results/demo_runs.json collects these)."""
    return {
        "elapsed_seconds": round(elapsed, 1),
        "jobs_seconds": round(float(per_rule.seconds.sum()), 1),
        "stages": {st: round(float(r.seconds.sum()), 1) for st, r in per_rule.groupby("stage", sort=False)},
        "rules": {r.rule: {"seconds": round(float(r.seconds), 1), "jobs": int(r.jobs)} for r in per_rule.itertuples()},
        "targets": targets,
    }


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t") if path.is_file() else None


def _row(table: pd.DataFrame | None, **match) -> pd.Series | None:
    if table is None:
        return None
    hits = table
    for column, value in match.items():
        if column not in hits.columns:
            return None
        hits = hits[hits[column].astype(str) == str(value)]
    return hits.iloc[0] if len(hits) else None


def _target(name: str, value: str, goal: str, met: bool | None) -> dict:
    return {"target": name, "value": value, "goal": goal, "met": met}


def reconstruction_targets(table6: pd.DataFrame | None) -> list[dict]:
    ae = _row(table6, Model="AutoencoderKL")
    ldae_rows = None if table6 is None else table6[(table6.Model == "LDAE") & table6.Encoding.str.startswith("(b)")]
    out = [
        _target(
            "AutoencoderKL test SSIM",
            "n/a" if ae is None else f"{ae.SSIM:.3f}",
            f">= {AE_SSIM_MIN}",
            None if ae is None else bool(ae.SSIM >= AE_SSIM_MIN),
        )
    ]
    if ae is None or ldae_rows is None or ldae_rows.empty:
        return [*out, _target("LDAE (b) SSIM vs the autoencoder", "n/a", f"within {LDAE_SSIM_GAP}", None)]
    ldae = ldae_rows.loc[ldae_rows["T"].astype(int).idxmax()]
    gap = float(ae.SSIM - ldae.SSIM)
    value = f"{ldae.SSIM:.3f} at T = {int(ldae['T'])} (gap {gap:+.3f})"
    return [*out, _target("LDAE (b) SSIM vs the autoencoder", value, f"gap <= {LDAE_SSIM_GAP}", gap <= LDAE_SSIM_GAP)]


def probe_targets(table7: pd.DataFrame | None, trivial_row: str) -> list[dict]:
    ldae, trivial = _row(table7, Model="LDAE"), _row(table7, Model=trivial_row)
    if ldae is None:
        return [
            _target("LDAE AD-vs-CN ROC-AUC", "n/a", f">= {AUC_MIN}, lower bound > 0.5", None),
            _target("LDAE age MAE vs the mean-age baseline", "n/a", f"<= {AGE_MAE_RATIO} x", None),
        ]
    auc, low = float(ldae["ROC-AUC"]), float(ldae.get("ROC-AUC_ci_low", float("nan")))
    out = [
        _target(
            "LDAE AD-vs-CN ROC-AUC",
            f"{auc:.3f} (lower 95 % bound {low:.3f})",
            f">= {AUC_MIN}, lower bound > 0.5",
            bool(auc >= AUC_MIN and low > 0.5),
        )
    ]
    if trivial is None:
        return [*out, _target("LDAE age MAE vs the mean-age baseline", "n/a", f"<= {AGE_MAE_RATIO} x", None)]
    ratio = float(ldae.MAE) / float(trivial.MAE)
    value = f"{float(ldae.MAE):.2f} vs {float(trivial.MAE):.2f} years (ratio {ratio:.2f})"
    return [
        *out,
        _target("LDAE age MAE vs the mean-age baseline", value, f"ratio <= {AGE_MAE_RATIO}", ratio <= AGE_MAE_RATIO),
    ]


def manipulation_targets(table: pd.DataFrame | None) -> list[dict]:
    """Per moved scan: p(positive class) of the re-encoded scan from the smallest to the largest scale, signed so
    that a move towards the target class counts positive."""
    needed = {"diagnosis", "towards", "scale", "p_positive_decoded", "positive_class"}
    if table is None or not needed <= set(table.columns) or table.scale.isna().all():
        return [_target("manipulation CN -> AD and AD -> CN", "n/a", f"move >= {MANIPULATION_MOVE}", None)]
    out = []
    for (diagnosis, towards), rows in table.dropna(subset=["scale"]).groupby(["diagnosis", "towards"], sort=False):
        rows = rows.sort_values("scale")
        sign = 1.0 if towards == rows.positive_class.iloc[0] else -1.0
        move = sign * float(rows.p_positive_decoded.iloc[-1] - rows.p_positive_decoded.iloc[0])
        value = f"{move:+.3f} (s = {rows.scale.iloc[0]:g} -> {rows.scale.iloc[-1]:g})"
        out.append(
            _target(
                f"manipulation {diagnosis} -> {towards}", value, f">= {MANIPULATION_MOVE}", move >= MANIPULATION_MOVE
            )
        )
    return out


def demo_targets(out_dir: str | Path) -> list[dict]:
    """The demo's targets, each with its measured value (``met`` None: not measured in this run)."""
    from ldae import outputs
    from ldae.evaluation.probes import TRIVIAL_ROW

    tables = {stem: _read(Path(outputs.table(out_dir, stem))) for stem in outputs.TABLES}
    return [
        *reconstruction_targets(tables.get(outputs.TABLE6)),
        *probe_targets(tables.get(outputs.TABLE7), TRIVIAL_ROW),
        *manipulation_targets(tables.get(outputs.FIGURE67_TABLE)),
    ]


def render_targets(targets: list[dict]) -> str:
    mark = {True: "met", False: "NOT met", None: "not measured"}
    width = max(len(t["target"]) for t in targets)
    lines = ["What the demo should show (test split; bench/README.md#demo):"]
    for t in targets:
        lines.append(f"  {t['target']:<{width}}  {t['value']:<40} goal {t['goal']:<28} {mark[t['met']]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae demo-summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default="demo", type=Path, help="the run's out_dir (default demo)")
    parser.add_argument(
        "--rules",
        default=Path("workflow/rules"),
        type=Path,
        help="folder of the workflow's .smk rule files (default workflow/rules)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write these numbers (seconds per rule and stage, elapsed, targets) as JSON"
    )
    args = parser.parse_args(argv)
    bench_dir = args.out_dir / "benchmarks"
    if not bench_dir.is_dir():
        print(f"ldae demo-summary: no {bench_dir}/ (run the workflow first, e.g. make demo)", file=sys.stderr)
        return 1
    try:
        bench = read_benchmarks(bench_dir)
    except ValueError as error:
        print(f"ldae demo-summary: {error}", file=sys.stderr)
        return 1
    if bench.empty:
        print(f"ldae demo-summary: no benchmark files under {bench_dir}/", file=sys.stderr)
        return 1
    stages = rule_stages(args.rules) if args.rules.is_dir() else {}
    per_rule, elapsed, targets = summarise(bench, stages), elapsed_seconds(bench), demo_targets(args.out_dir)
    print(render(per_rule, elapsed, files_to_open(args.out_dir)))
    print()
    print(render_targets(targets))
    if args.json:
        write_json(args.json, as_record(per_rule, elapsed, targets), trailing_newline=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
