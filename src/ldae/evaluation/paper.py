"""The paper's reported numbers (Lozupone et al. 2025, Tables 5-7 and Figure 8), for side-by-side tables, and the
paper's claims judged against this run's bootstrap intervals (results/README.md).

Only values stated in the paper (see paper-notes.md); a missing cell is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TABLE5", "TABLE6", "TABLE7", "FIGURE8", "Claim", "CLAIMS", "judge", "claims_report"]

# Table 5: efficiency
TABLE5 = [
    {
        "Model": "DAE",
        "Parameters": "130M",
        "Training": "1 week",
        "Seconds per reconstruction (T=100)": 120,
        "SSIM": 0.892,
        "LPIPS": 0.038,
    },
    {
        "Model": "LDAE",
        "Parameters": "920M",
        "Training": "500 + 200 epochs / 3 days",
        "Seconds per reconstruction (T=100)": 6,
        "SSIM": 0.962,
        "LPIPS": 0.076,
    },
]

# Table 6: reconstruction (SSIM per T = 10/20/50/100; LPIPS/MSE where the paper lists them)
TABLE6 = [
    {
        "Model": "AutoencoderKL",
        "Encoding": "-",
        "Code size (paper)": 5120,
        "T": "-",
        "SSIM": 0.962,
        "LPIPS": 0.075,
        "MSE": 0.001,
    },
    *[
        {
            "Model": "LDDIM",
            "Encoding": "encoded x_T",
            "Code size (paper)": 5120,
            "T": t,
            "SSIM": s,
            "LPIPS": None,
            "MSE": None,
        }
        for t, s in zip((10, 20, 50, 100), (0.959, 0.962, 0.962, 0.962))
    ],
    *[
        {
            "Model": "LDAE",
            "Encoding": "(a) y_sem + noise x_T",
            "Code size (paper)": 768,
            "T": t,
            "SSIM": s,
            "LPIPS": None,
            "MSE": 0.005,
        }
        for t, s in zip((10, 20, 50, 100), (0.872, 0.871, 0.870, 0.869))
    ],
    *[
        {
            "Model": "LDAE",
            "Encoding": "(b) y_sem + encoded x_T",
            "Code size (paper)": 5888,
            "T": t,
            "SSIM": s,
            "LPIPS": lp,
            "MSE": None,
        }
        for t, s, lp in zip((10, 20, 50, 100), (0.953, 0.960, 0.962, 0.962), (0.081, 0.077, 0.076, 0.075))
    ],
    *[
        {
            "Model": "DAE",
            "Encoding": "(a) y_sem + noise x_T",
            "Code size (paper)": 768,
            "T": t,
            "SSIM": 0.28,
            "LPIPS": None,
            "MSE": None,
        }
        for t in (10, 20, 50, 100)
    ],
    *[
        {
            "Model": "DAE",
            "Encoding": "(b) y_sem + encoded x_T",
            "Code size (paper)": 1605632,
            "T": t,
            "SSIM": s,
            "LPIPS": None,
            "MSE": None,
        }
        for t, s in zip((10, 20, 50, 100), (0.216, 0.397, 0.684, 0.892))
    ],
]

# Table 7: linear probes
TABLE7 = [
    {
        "Model": "LDAE",
        "Accuracy": 0.8365,
        "Precision": 0.8469,
        "Recall": 0.9102,
        "F1": 0.8774,
        "MCC": 0.6369,
        "ROC-AUC": 0.8948,
        "MAE": 4.16,
        "RMSE": 5.23,
    },
    {
        "Model": "DAE",
        "Accuracy": 0.7468,
        "Precision": 0.7768,
        "Recall": 0.8504,
        "F1": 0.8119,
        "MCC": 0.4312,
        "ROC-AUC": 0.7800,
        "MAE": 4.93,
        "RMSE": 6.11,
    },
    {
        "Model": "Supervised encoder",
        "Accuracy": 0.8464,
        "Precision": 0.8690,
        "Recall": 0.8743,
        "F1": 0.8716,
        "MCC": 0.6806,
        "ROC-AUC": 0.9067,
        "MAE": 4.34,
        "RMSE": 4.63,
    },
]

# Figure 8: interpolation (text of the paper)
FIGURE8 = [
    {"stratum": "time gap (months)", "level": "6", "ssim": 0.969, "mse": 0.0019},
    {"stratum": "time gap (months)", "level": "<= 24", "ssim": "> 0.93", "mse": "< 0.004"},
]


# ------------------------------------------------------------------------------------------------ claims
# Every paper number of Tables 6/7 and Figure 8 becomes one claim, judged against this run's subject-level bootstrap
# interval (columns <metric>_ci_low/_ci_high of the result TSVs, ldae.evaluation.bootstrap).
@dataclass(frozen=True)
class Claim:
    """One statement of the paper, checkable against a result table.

    ``kind``: 'value' (the paper's number lies in our interval), 'above' / 'below' (our interval lies entirely
    above / below ``value``; ``every`` row the selector matches must), 'better' (row ``select`` beats row
    ``other`` on ``column``: intervals apart; ``lower_is_better`` for errors)."""

    table: str
    text: str
    select: tuple[tuple[str, str], ...]
    column: str
    kind: str = "value"
    value: float | None = None
    other: tuple[tuple[str, str], ...] = ()
    lower_is_better: bool = False
    level_max: float | None = None


def _sel(**pairs) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in pairs.items())


def _table7_claims() -> list[Claim]:
    claims = [
        Claim(
            "table7_linear_probes", f"{row['Model']} {col} = {row[col]}", _sel(Model=row["Model"]), col, value=row[col]
        )
        for row in TABLE7
        for col in row
        if col != "Model"
    ]
    for col, lower in (
        ("ROC-AUC", False),
        ("MCC", False),
        ("Accuracy", False),
        ("F1", False),
        ("MAE", True),
        ("RMSE", True),
    ):
        claims.append(
            Claim(
                "table7_linear_probes",
                f"LDAE {'below' if lower else 'above'} DAE on {col}",
                _sel(Model="LDAE"),
                col,
                kind="better",
                other=_sel(Model="DAE"),
                lower_is_better=lower,
            )
        )
    return claims


def _table6_claims() -> list[Claim]:
    claims = []
    for row in TABLE6:
        for col in ("SSIM", "LPIPS", "MSE"):
            if row[col] is None:
                continue
            where = " ".join(str(p) for p in (row["Model"], row["Encoding"]) if p != "-")
            where += "" if row["T"] == "-" else f" T={row['T']}"
            claims.append(
                Claim(
                    "table6_reconstruction",
                    f"{where}: {col} = {row[col]}",
                    _sel(Model=row["Model"], Encoding=row["Encoding"], T=row["T"]),
                    col,
                    value=row[col],
                )
            )
    return claims


def _figure8_claims() -> list[Claim]:
    gap = "time gap (months)"
    return [
        Claim(
            "figure8_interpolation", "6-month time gap: SSIM = 0.969", _sel(stratum=gap, level="6"), "ssim", value=0.969
        ),
        Claim(
            "figure8_interpolation", "6-month time gap: MSE = 0.0019", _sel(stratum=gap, level="6"), "mse", value=0.0019
        ),
        Claim(
            "figure8_interpolation",
            "every time gap up to 24 months: SSIM > 0.93",
            _sel(stratum=gap),
            "ssim",
            kind="above",
            value=0.93,
            level_max=24,
        ),
        Claim(
            "figure8_interpolation",
            "every time gap up to 24 months: MSE < 0.004",
            _sel(stratum=gap),
            "mse",
            kind="below",
            value=0.004,
            level_max=24,
        ),
    ]


CLAIMS = [*_table7_claims(), *_table6_claims(), *_figure8_claims()]


def _rows(frame: pd.DataFrame, select, level_max: float | None = None) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    for column, value in select:
        if column not in frame.columns:
            return frame.iloc[:0]
        keep &= frame[column].astype(str).to_numpy() == value
    rows = frame[keep]
    if level_max is not None and "level" in rows.columns:
        levels = pd.to_numeric(rows.level, errors="coerce")
        rows = rows[levels.notna() & (levels <= level_max)]
    return rows


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _interval(row: pd.Series, column: str) -> tuple[float, float, float]:
    get = lambda c: float(row[c]) if c in row.index and pd.notna(row[c]) else float("nan")  # noqa: E731
    return get(column), get(f"{column}_ci_low"), get(f"{column}_ci_high")


def judge(claim: Claim, frame: pd.DataFrame | None) -> tuple[str, str]:
    """(verdict, sentence): verdict 'reproduced', 'not reproduced', 'undecided' or 'not measured'."""
    if frame is None:
        return "not measured", "not measured (the table is missing)"
    rows = _rows(frame, claim.select, claim.level_max)
    if rows.empty or claim.column not in rows.columns:
        return "not measured", "not measured in this run (no such row or column)"
    if claim.kind == "better":
        other = _rows(frame, claim.other)
        if other.empty:
            return "not measured", "not measured in this run (no comparison row)"
        ours, lo, hi = _interval(rows.iloc[0], claim.column)
        theirs, olo, ohi = _interval(other.iloc[0], claim.column)
        if not all(np.isfinite([lo, hi, olo, ohi])):
            return "not measured", "no interval in this run (n/a)"
        a_lo, a_hi, b_lo, b_hi = (-hi, -lo, -ohi, -olo) if claim.lower_is_better else (lo, hi, olo, ohi)
        said = f"{_fmt(ours)} [{_fmt(lo)}, {_fmt(hi)}] vs {_fmt(theirs)} [{_fmt(olo)}, {_fmt(ohi)}]"
        if a_lo > b_hi:
            return "reproduced", f"reproduced: the intervals do not overlap ({said})"
        if a_hi < b_lo:
            return "not reproduced", f"not reproduced: the reverse holds, the intervals do not overlap ({said})"
        return "undecided", f"undecided: the intervals overlap ({said})"
    verdicts = []
    for _, row in rows.iterrows():
        ours, lo, hi = _interval(row, claim.column)
        label = f" at {row['level']} months" if claim.level_max is not None else ""
        if not (np.isfinite(lo) and np.isfinite(hi)):
            verdicts.append(("not measured", f"no interval{label} (ours {_fmt(ours)})"))
            continue
        said = f"ours {_fmt(ours)} [{_fmt(lo)}, {_fmt(hi)}]{label}"
        if claim.kind == "value":
            if lo <= claim.value <= hi:
                verdicts.append(("reproduced", f"reproduced: the paper's {_fmt(claim.value)} lies in {said}"))
            else:
                side = "above" if lo > claim.value else "below"
                verdicts.append(
                    ("not reproduced", f"not reproduced: {said} lies {side} the paper's {_fmt(claim.value)}")
                )
        else:
            holds = lo > claim.value if claim.kind == "above" else hi < claim.value
            fails = hi < claim.value if claim.kind == "above" else lo > claim.value
            if holds:
                verdicts.append(("reproduced", f"reproduced ({said})"))
            elif fails:
                verdicts.append(("not reproduced", f"not reproduced ({said})"))
            else:
                verdicts.append(("undecided", f"undecided: the interval contains {_fmt(claim.value)} ({said})"))
    kinds = [v for v, _ in verdicts]
    for verdict in ("not reproduced", "undecided", "not measured", "reproduced"):
        if verdict in kinds:
            return verdict, "; ".join(s for _, s in verdicts)
    return "not measured", "not measured"


def claims_report(frames: dict[str, pd.DataFrame | None], confidence: str = "95 %") -> list[str]:
    """Markdown lines: per table, each claim with its verdict in words, and a count."""
    lines = [
        f"Each number the paper reports is checked against this run's {confidence} subject-level bootstrap "
        "interval (test split). 'reproduced': the paper's value lies inside our interval (or, for a "
        "threshold or a comparison, our interval lies on the paper's side); 'not reproduced': our interval "
        "excludes it; 'undecided': the interval is too wide to tell.",
        "",
    ]
    for table in dict.fromkeys(c.table for c in CLAIMS):
        if table not in frames:
            continue
        judged = [(c, *judge(c, frames[table])) for c in CLAIMS if c.table == table]
        counts = {
            v: sum(1 for _, verdict, _ in judged if verdict == v)
            for v in ("reproduced", "not reproduced", "undecided", "not measured")
        }
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines += [f"**{table}** ({summary}):", ""]
        lines += [f"- {c.text}: {sentence}" for c, verdict, sentence in judged if verdict != "not measured"]
        missing = [c.text for c, verdict, _ in judged if verdict == "not measured"]
        if missing:
            lines.append(f"- not measured in this run (no such row, column or interval): {'; '.join(missing)}")
        lines.append("")
    return lines
