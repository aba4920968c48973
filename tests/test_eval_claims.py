"""results/README.md: each paper number judged against this run's bootstrap interval, in words."""

from __future__ import annotations

import pandas as pd

from ldae.evaluation.paper import CLAIMS, TABLE6, TABLE7, Claim, judge
from ldae.evaluation.report import build_readme
from ldae.evaluation.tables import write_table


def table7() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Model": "LDAE",
                "ROC-AUC": 0.88,
                "ROC-AUC_ci_low": 0.85,
                "ROC-AUC_ci_high": 0.91,
                "MCC": 0.50,
                "MCC_ci_low": 0.45,
                "MCC_ci_high": 0.55,
                "MAE": 4.0,
                "MAE_ci_low": 3.8,
                "MAE_ci_high": 4.3,
            },
            {
                "Model": "DAE",
                "ROC-AUC": 0.75,
                "ROC-AUC_ci_low": 0.70,
                "ROC-AUC_ci_high": 0.80,
                "MCC": 0.52,
                "MCC_ci_low": 0.40,
                "MCC_ci_high": 0.60,
                "MAE": 5.0,
                "MAE_ci_low": 4.6,
                "MAE_ci_high": 5.5,
            },
        ]
    )


def claim(text):
    return next(c for c in CLAIMS if c.text == text)


def test_every_paper_number_is_a_claim():
    values = [c for c in CLAIMS if c.kind == "value"]
    assert sum(c.table == "table7_linear_probes" for c in values) == sum(len(r) - 1 for r in TABLE7)
    assert sum(c.table == "table6_reconstruction" for c in values) == sum(
        r[k] is not None for r in TABLE6 for k in ("SSIM", "LPIPS", "MSE")
    )
    assert {c.text for c in CLAIMS if c.table == "figure8_interpolation"} >= {
        "6-month time gap: SSIM = 0.969",
        "every time gap up to 24 months: SSIM > 0.93",
    }


def test_value_and_comparison_verdicts():
    frame = table7()
    verdict, words = judge(claim("LDAE ROC-AUC = 0.8948"), frame)
    assert verdict == "reproduced" and "0.8948 lies in ours 0.88 [0.85, 0.91]" in words
    verdict, words = judge(claim("LDAE MCC = 0.6369"), frame)
    assert verdict == "not reproduced" and "lies below the paper's 0.6369" in words
    assert judge(claim("LDAE RMSE = 5.23"), frame)[0] == "not measured"  # no such column here
    assert judge(claim("Supervised encoder MCC = 0.6806"), frame)[0] == "not measured"  # no such row
    assert judge(claim("LDAE above DAE on ROC-AUC"), frame)[0] == "reproduced"
    assert judge(claim("LDAE above DAE on MCC"), frame)[0] == "undecided"  # the intervals overlap
    assert judge(claim("LDAE below DAE on MAE"), frame)[0] == "reproduced"  # lower error is better
    reversed_frame = frame.assign(Model=["DAE", "LDAE"])
    assert judge(claim("LDAE above DAE on ROC-AUC"), reversed_frame)[0] == "not reproduced"
    assert judge(claim("LDAE ROC-AUC = 0.8948"), None)[0] == "not measured"


def test_threshold_claims_over_the_time_gaps():
    gap = "time gap (months)"
    frame = pd.DataFrame(
        [
            {"stratum": "all", "level": "all", "ssim": 0.95, "ssim_ci_low": 0.90, "ssim_ci_high": 0.99},
            {"stratum": gap, "level": "6", "ssim": 0.97, "ssim_ci_low": 0.965, "ssim_ci_high": 0.975},
            {"stratum": gap, "level": "24", "ssim": 0.94, "ssim_ci_low": 0.935, "ssim_ci_high": 0.945},
            {"stratum": gap, "level": "36", "ssim": 0.80, "ssim_ci_low": 0.75, "ssim_ci_high": 0.85},  # beyond 24
        ]
    )
    above = claim("every time gap up to 24 months: SSIM > 0.93")
    verdict, words = judge(above, frame)
    assert verdict == "reproduced" and "at 6 months" in words and "at 36 months" not in words
    lower = frame.copy()
    lower.loc[2, ["ssim_ci_low"]] = 0.92
    assert judge(above, lower)[0] == "undecided"
    lower.loc[2, ["ssim_ci_high"]] = 0.925
    assert judge(above, lower)[0] == "not reproduced"
    assert judge(claim("6-month time gap: SSIM = 0.969"), frame)[0] == "reproduced"
    below = Claim("figure8_interpolation", "x", (("stratum", gap),), "ssim", kind="below", value=0.99, level_max=24)
    assert judge(below, frame)[0] == "reproduced"


def test_readme_states_the_verdicts(tmp_path):
    tables = tmp_path / "tables"
    write_table(table7(), tables / "table7_linear_probes.tsv", intervals=["ROC-AUC", "MCC", "MAE"])
    readme = build_readme(
        {
            "table7_linear_probes": tables / "table7_linear_probes.md",
            "table6_reconstruction": tables / "table6_reconstruction.md",
        },
        {},
        tmp_path / "README.md",
    )
    assert "## The paper's claims in this run" in readme
    assert "- LDAE ROC-AUC = 0.8948: reproduced: the paper's 0.8948 lies in ours 0.88 [0.85, 0.91]" in readme
    assert "- LDAE MCC = 0.6369: not reproduced" in readme
    assert "**table6_reconstruction** (31 not measured):" in readme
    assert "- not measured in this run (no such row, column or interval): AutoencoderKL: SSIM = 0.962;" in readme
    assert "0.8800 [0.8500, 0.9100]" in readme  # the table itself shows the interval
