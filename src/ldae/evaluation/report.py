"""``ldae results-readme``: results/README.md - every paper table beside our numbers, and the figures.

Each table's markdown (written by its rule) already holds this run's numbers above the paper's; this page strings
them together in the paper's order with a short guide, links the figures, and says in words for each number the
paper reports whether this run reproduces it within its subject-level bootstrap interval (the sibling TSVs;
:func:`ldae.evaluation.paper.claims_report`). (The HTML report with captions is
Snakemake's: ``snakemake --report report.html``, captions in workflow/report/*.rst.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ldae.files import write_text

from .paper import claims_report
from .tables import read_table

__all__ = ["build_readme", "main"]

GUIDE = {
    "table5_efficiency": "Seconds per reconstruction and parameter counts, LDAE vs the voxel-space DAE, measured in "
    "one job on one device. The headline is the speed-up column (paper: 20x).",
    "table6_reconstruction": "How well each representation reconstructs a test scan. Higher SSIM, lower LPIPS/MSE is "
    "better. (a) rows decode from random noise (only y_sem carries the scan), (b) rows "
    "from the DDIM-inverted x_T; T is the number of DDIM steps.",
    "table7_linear_probes": "Linear probes on frozen embeddings: AD vs CN (classification metrics, higher is "
    "better) and age (MAE/RMSE in years, lower is better). [low, high] is the 95 % "
    "subject-level bootstrap interval. The trivial row (probe_train majority class / mean "
    "age) is what an embedding has to beat: ROC-AUC 0.5, MCC 0.",
    "figure8_interpolation": "Generated intermediate visits vs the AE reconstruction of the real visit, by time "
    "gap, prediction gap and relative position; nearest_* is the do-nothing reference "
    "(the closest visit, unchanged).",
    "figure67_manipulation": "Moving y_sem along the AD-vs-CN probe direction: the probe's probability on the "
    "shifted code and on the re-encoded decoded scan, and how much the scan changed.",
}


def build_readme(
    tables: dict[str, Path], figures: dict[str, Path], out: Path, title: str = "Results", confidence: float = 0.95
) -> str:
    """The README text; table markdown files are included verbatim, the paper's claims are judged against the
    sibling TSVs (``<stem>.tsv``), figure paths are made relative to ``out``."""
    lines = [
        f"# {title}",
        "",
        "Every number below comes out of a workflow rule (results/tables/*.tsv hold full precision, 'n/a' "
        "marks a value that could not be computed, e.g. LPIPS without local weights). Each table shows this "
        "run first and the paper's numbers (Lozupone et al. 2025) below it; [low, high] after a test-split "
        f"number is its {confidence:.0%} subject-level bootstrap interval.",
        "",
    ]
    frames = {
        stem: (read_table(Path(path).with_suffix(".tsv")) if Path(path).with_suffix(".tsv").is_file() else None)
        for stem, path in tables.items()
    }
    lines += ["## The paper's claims in this run", "", *claims_report(frames, f"{confidence:.0%}")]
    for stem, path in tables.items():
        path = Path(path)
        lines += [f"## {stem}", ""]
        if stem in GUIDE:
            lines += [f"*How to read it:* {GUIDE[stem]}", ""]
        lines += [path.read_text().strip() if path.is_file() else f"_(missing: {path})_", ""]
    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            rel = os.path.relpath(Path(path), Path(out).parent)
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae results-readme", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", required=True, help="markdown tables (results/tables/*.md)")
    parser.add_argument("--figures", nargs="*", default=[], help="PNG figures")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--confidence", type=float, default=0.95, help="evaluation.bootstrap.confidence")
    args = parser.parse_args(argv)
    tables = {Path(p).stem: Path(p) for p in args.tables}
    figures = {Path(p).stem: Path(p) for p in args.figures}
    text = build_readme(tables, figures, args.out, confidence=args.confidence)
    write_text(args.out, text)
    return 0
