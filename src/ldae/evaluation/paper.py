"""The paper's reported numbers (Lozupone et al. 2025, Tables 5-7 and Figure 8), for side-by-side tables.

Only values stated in the paper (see paper-notes.md); a missing cell is None.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["TABLE5", "TABLE6", "TABLE7", "FIGURE8", "paper_frame"]

# Table 5: efficiency
TABLE5 = [
    {"Model": "DAE", "Parameters": "130M", "Training": "1 week", "Seconds per reconstruction (T=100)": 120,
     "SSIM": 0.892, "LPIPS": 0.038},
    {"Model": "LDAE", "Parameters": "920M", "Training": "500 + 200 epochs / 3 days",
     "Seconds per reconstruction (T=100)": 6, "SSIM": 0.962, "LPIPS": 0.076},
]

# Table 6: reconstruction (SSIM per T = 10/20/50/100; LPIPS/MSE where the paper lists them)
TABLE6 = [
    {"Model": "AutoencoderKL", "Encoding": "-", "Code size (paper)": 5120, "T": "-", "SSIM": 0.962, "LPIPS": 0.075,
     "MSE": 0.001},
    *[{"Model": "LDDIM", "Encoding": "encoded x_T", "Code size (paper)": 5120, "T": t, "SSIM": s, "LPIPS": None,
       "MSE": None} for t, s in zip((10, 20, 50, 100), (0.959, 0.962, 0.962, 0.962))],
    *[{"Model": "LDAE", "Encoding": "(a) y_sem + noise x_T", "Code size (paper)": 768, "T": t, "SSIM": s,
       "LPIPS": None, "MSE": 0.005} for t, s in zip((10, 20, 50, 100), (0.872, 0.871, 0.870, 0.869))],
    *[{"Model": "LDAE", "Encoding": "(b) y_sem + encoded x_T", "Code size (paper)": 5888, "T": t, "SSIM": s,
       "LPIPS": lp, "MSE": None}
      for t, s, lp in zip((10, 20, 50, 100), (0.953, 0.960, 0.962, 0.962), (0.081, 0.077, 0.076, 0.075))],
    *[{"Model": "DAE", "Encoding": "(a) y_sem + noise x_T", "Code size (paper)": 768, "T": t, "SSIM": 0.28,
       "LPIPS": None, "MSE": None} for t in (10, 20, 50, 100)],
    *[{"Model": "DAE", "Encoding": "(b) y_sem + encoded x_T", "Code size (paper)": 1605632, "T": t, "SSIM": s,
       "LPIPS": None, "MSE": None} for t, s in zip((10, 20, 50, 100), (0.216, 0.397, 0.684, 0.892))],
]

# Table 7: linear probes
TABLE7 = [
    {"Model": "LDAE", "Accuracy": 0.8365, "Precision": 0.8469, "Recall": 0.9102, "F1": 0.8774, "MCC": 0.6369,
     "ROC-AUC": 0.8948, "MAE": 4.16, "RMSE": 5.23},
    {"Model": "DAE", "Accuracy": 0.7468, "Precision": 0.7768, "Recall": 0.8504, "F1": 0.8119, "MCC": 0.4312,
     "ROC-AUC": 0.7800, "MAE": 4.93, "RMSE": 6.11},
    {"Model": "Supervised encoder", "Accuracy": 0.8464, "Precision": 0.8690, "Recall": 0.8743, "F1": 0.8716,
     "MCC": 0.6806, "ROC-AUC": 0.9067, "MAE": 4.34, "RMSE": 4.63},
]

# Figure 8: interpolation (text of the paper)
FIGURE8 = [
    {"stratum": "time gap (months)", "level": "6", "ssim": 0.969, "mse": 0.0019},
    {"stratum": "time gap (months)", "level": "<= 24", "ssim": "> 0.93", "mse": "< 0.004"},
]


def paper_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)
