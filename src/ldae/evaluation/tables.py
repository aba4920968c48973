"""TSV + markdown writers for the result tables (named after the paper's tables).

A missing value (NaN/None: e.g. LPIPS without local weights) is written as "n/a" in both, never as a number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ldae.data.tables import write_tsv_atomic
from ldae.files import write_text

__all__ = [
    "format_value",
    "markdown_table",
    "write_table",
    "read_table",
    "with_intervals",
    "TABLE_FILES",
    "CI_LOW",
    "CI_HIGH",
]

# interval columns of a metric column ``m``: ``m + CI_LOW`` and ``m + CI_HIGH`` (ldae.evaluation.bootstrap)
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"

# stem -> title (results/tables/<stem>.tsv and .md)
TABLE_FILES = {
    "table5_efficiency": "Table 5 - Efficiency: LDAE vs the voxel-space DAE (same hardware, same run)",
    "table6_reconstruction": "Table 6 - Reconstruction on the test split (SSIM / LPIPS / MSE)",
    "table7_linear_probes": "Table 7 - Linear probes on frozen embeddings (AD vs CN; age)",
    "figure8_interpolation": "Figure 8 - Longitudinal interpolation on the test split",
    "figure67_manipulation": "Figures 6/7 - Manipulation along the AD-vs-CN probe direction",
}


def format_value(value, digits: int = 4) -> str:
    """Numbers with ``digits`` significant decimals (integers as integers), NaN/None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        if float(value).is_integer() and abs(value) >= 10000:  # counts stored as floats (a column with a NaN)
            return f"{int(value):,}"
        if value != 0 and abs(value) < 10 ** -(digits - 1):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    text = str(value)
    return "n/a" if text in ("nan", "None", "") else text


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = [format_value(v, digits).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_intervals(frame: pd.DataFrame, columns: Sequence[str], digits: int = 4) -> pd.DataFrame:
    """A copy for display: each of ``columns`` that has ``<col>_ci_low/_ci_high`` becomes the text
    'value [low, high]' ('n/a' parts stay 'n/a'); the interval columns themselves are dropped."""
    out = frame.copy()
    for col in columns:
        low, high = f"{col}{CI_LOW}", f"{col}{CI_HIGH}"
        if col not in out.columns or low not in out.columns or high not in out.columns:
            continue
        text = []
        for value, lo, hi in zip(out[col], out[low], out[high]):
            shown = format_value(value, digits)
            if shown != "n/a" and not (pd.isna(lo) or pd.isna(hi)):
                shown += f" [{format_value(lo, digits)}, {format_value(hi, digits)}]"
            text.append(shown)
        out[col] = text
        out = out.drop(columns=[low, high])
    return out


def write_table(
    frame: pd.DataFrame,
    tsv_path: str | os.PathLike,
    title: str | None = None,
    notes: Sequence[str] = (),
    digits: int = 4,
    md_path: str | os.PathLike | None = None,
    paper: pd.DataFrame | None = None,
    md_columns: Sequence[str] | None = None,
    intervals: Sequence[str] = (),
) -> None:
    """``frame`` as ``<stem>.tsv`` (full precision, 'n/a' for missing) and ``<stem>.md`` (rounded, titled; only
    ``md_columns`` if given; ``intervals``: columns shown as 'value [low, high]' from their ``_ci_low/_ci_high``
    columns; the paper's numbers below it if ``paper`` is given)."""
    tsv_path = Path(tsv_path)
    md_path = Path(md_path) if md_path else tsv_path.with_suffix(".md")
    clean = frame.astype(object).where(frame.notna(), None)
    write_tsv_atomic(clean, tsv_path)
    title = title or TABLE_FILES.get(tsv_path.stem, tsv_path.stem)
    shown = with_intervals(frame, intervals, digits) if intervals else frame
    shown = shown[list(md_columns)] if md_columns else shown
    text = [f"### {title}", "", "This run:", "", markdown_table(shown, digits), ""]
    if paper is not None:
        text += ["Paper (Lozupone et al. 2025):", "", markdown_table(paper, digits), ""]
    text += [f"- {n}" for n in notes]
    write_text(md_path, "\n".join(text).rstrip() + "\n")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by :func:`write_table` ('n/a' back to NaN)."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
