"""Benchmark: is the synthetic cohort's planted age and AD signal visible in the images the models see?

The demo profile's synthetic download (data.synthetic of profiles/demo/demo.yaml over config.yaml; or --raw, an
existing one) -> the real preprocessing of the demo profile (`pipeline.preprocess_session`: N4, deepbet, affine
to MNI152 at 3 mm) for the selected scan of every visit (or the first and last visit of each subject with
--sessions ends) -> the shared MONAI inference transforms of the demo (images.spacing_mm 3.0, shape 48x64x48,
min-max) -> leave-one-subject-out linear models on the images block-averaged to 6 mm:
- age: ridge regression (alpha by inner CV), r and MAE against the baseline that predicts the other subjects' mean;
- AD vs CN: L2 logistic regression, ROC-AUC over the AD and CN sessions;
plus the same age fit on the truth tables' planted volumes (per ICV), the ceiling the images can approach.

Usage: nice .venv/bin/python bench/synth_signal/run.py --work /tmp/synth_signal --sessions all --jobs 2 \
           --out bench/results/synth_signal.json --figure bench/results/synth_signal.png
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]


def demo_config() -> dict:
    """config.yaml with profiles/demo/demo.yaml over it (one level of nesting, as the sections are used here)."""
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    demo = yaml.safe_load((ROOT / "profiles/demo/demo.yaml").read_text())
    merged = copy.deepcopy(base)
    for key, value in demo.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            for sub, item in value.items():
                both = isinstance(item, dict) and isinstance(merged[key].get(sub), dict)
                merged[key][sub] = {**merged[key][sub], **item} if both else item
        else:
            merged[key] = value
    return merged


def generate(raw: Path, synthetic: dict) -> Path:
    from ldae.data import synth

    if (raw / "truth" / "images.tsv").exists():
        return raw
    synth.generate(raw, int(synthetic["subjects"]), min_visits=int(synthetic["min_visits"]),
                   max_visits=int(synthetic["max_visits"]), voxel_mm=float(synthetic["voxel_mm"]),
                   seed=int(synthetic["seed"]), cohorts=list(synthetic["cohorts"]))  # fmt: skip
    return raw


def visits(raw: Path, which: str) -> pd.DataFrame:
    images = pd.read_csv(raw / "truth" / "images.tsv", sep="\t")
    chosen = images[images.selected & images.written].sort_values(["ptid", "months"])
    if which == "ends":
        chosen = pd.concat([chosen.groupby("ptid").head(1), chosen.groupby("ptid").tail(1)]).drop_duplicates()
    return chosen.reset_index(drop=True)


def _preprocess_one(args: tuple) -> tuple[str, str, float]:
    raw, row, root, cfg, reuse = args
    from ldae.preprocess import naming, pipeline, templates

    t0 = time.perf_counter()
    if reuse:
        reg = pipeline.resolve_config(cfg)["registration"]
        paths = naming.preproc_paths(str(root), "sub-" + row["ptid"].replace("_", ""), f"ses-M{int(row['months']):03d}",
                                     templates.space_label(reg), reg["type"])  # fmt: skip
        if os.path.exists(paths.image):
            return paths.image, "", float("nan")
    rec = pipeline.preprocess_session(str(raw / row["raw_path"]), "sub-" + row["ptid"].replace("_", ""),
                                      f"ses-M{int(row['months']):03d}", str(root), cfg, threads=1)  # fmt: skip
    out = rec.get("outputs", {}).get("image", "") if rec["status"] == "pass" else ""
    return out and str(Path(root) / out), rec["reason"], time.perf_counter() - t0


def preprocess(raw: Path, table: pd.DataFrame, root: Path, cfg: dict, jobs: int, reuse: bool) -> pd.DataFrame:
    work = [(raw, row, root, cfg["preprocess"], reuse) for row in table.to_dict("records")]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(_preprocess_one, work))
    return table.assign(image=[d[0] for d in done], reason=[d[1] for d in done], seconds=[d[2] for d in done])


# MNI mm boxes (lo, hi) for simple image measures: CSF voxels around the lateral ventricles, in the medial temporal
# lobes (temporal horns, hippocampal fissures)
ROIS = {
    "ventricles": [([-30, -45, -5], [30, 30, 35])],
    "medial_temporal": [([15, -40, -32], [45, -5, -5]), ([-45, -40, -32], [-15, -5, -5])],
}


def load_inputs(paths: list[str], images_cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model input of every session (the shared MONAI transforms) and its voxel -> MNI mm affine."""
    from ldae.data.images import image_reader

    load = image_reader(images_cfg)
    vols = np.stack([load(p)[0].numpy() for p in paths])
    return vols, load.affines[str(paths[0])]


def block_features(vols: np.ndarray) -> np.ndarray:
    """Block-averaged by 2 (6 mm), flattened."""
    n, x, y, z = vols.shape
    vols = vols[:, : x - x % 2, : y - y % 2, : z - z % 2]
    return vols.reshape(n, x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(2, 4, 6)).reshape(n, -1)


def csf_voxels(vols: np.ndarray, affine: np.ndarray) -> pd.DataFrame:
    """Per session and ROI: voxels darker than half the white-matter level (90th percentile inside the brain)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in vols.shape[1:]], indexing="ij"), -1).reshape(-1, 3)
    mm = (grid @ affine[:3, :3].T + affine[:3, 3]).reshape(*vols.shape[1:], 3)
    masks = {
        name: np.any([np.all((mm >= lo) & (mm <= hi), axis=-1) for lo, hi in boxes], axis=0)
        for name, boxes in ROIS.items()
    }
    rows = []
    for v in vols:
        brain = v > 0.05
        dark = brain & (v < 0.5 * np.percentile(v[brain], 90))
        rows.append({f"{name}_csf_voxels": int((dark & m).sum()) for name, m in masks.items()})
    return pd.DataFrame(rows)


def example_figure(table: pd.DataFrame, vols: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """The youngest scan, the youngest and oldest CN scans and the AD scan with the largest disease load, as the
    models see them: axial through the ventricles, coronal through the hippocampi, one grey window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cn = table[table.diagnosis == "CN"].sort_values("age_at_scan")
    ad = table[table.diagnosis == "AD"].sort_values("disease_load")
    picks = [
        ("youngest", table.age_at_scan.idxmin()),
        ("youngest CN", cn.index[0]),
        ("oldest CN", cn.index[-1]),
        ("AD, largest AD load", ad.index[-1]),
    ]
    inv = np.linalg.inv(affine)
    k = int(round((inv @ [0, 0, 18, 1])[2]))
    j = int(round((inv @ [0, -22, 0, 1])[1]))
    fig, axes = plt.subplots(2, len(picks), figsize=(3.2 * len(picks), 7), layout="constrained")
    for c, (name, i) in enumerate(picks):
        row = table.loc[i]
        axes[0, c].imshow(np.rot90(vols[i][:, :, k]), cmap="gray", vmin=0, vmax=0.9)
        axes[1, c].imshow(np.rot90(vols[i][:, j, :]), cmap="gray", vmin=0, vmax=0.9)
        axes[0, c].set_title(
            f"{name}: {row.diagnosis} {row.age_at_scan:.0f} y\nage load {row.age_load:.2f}, "
            f"AD load {row.disease_load:.2f}",
            fontsize=10,
        )
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(
        "Synthetic demo cohort after preprocessing, as the models see it (3 mm, 48x64x48, min-max): "
        "axial z = 18 mm, coronal y = -22 mm, window [0, 0.9]",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def leave_subject_out_age(features: np.ndarray, age: np.ndarray, groups: np.ndarray, model) -> dict:
    fit, mean = np.zeros(len(age)), np.zeros(len(age))
    for g in np.unique(groups):
        test = groups == g
        model.fit(features[~test], age[~test])
        fit[test] = model.predict(features[test])
        mean[test] = age[~test].mean()
    return {
        "r": round(float(np.corrcoef(fit, age)[0, 1]), 3),
        "mae": round(float(np.abs(fit - age).mean()), 2),
        "mae_mean_baseline": round(float(np.abs(mean - age).mean()), 2),
    }


def leave_subject_out_ad(features: np.ndarray, is_ad: np.ndarray, groups: np.ndarray, model) -> float:
    from sklearn.metrics import roc_auc_score

    score = np.zeros(len(is_ad))
    for g in np.unique(groups):
        test = groups == g
        model.fit(features[~test], is_ad[~test])
        score[test] = model.predict_proba(features[test])[:, 1]
    return round(float(roc_auc_score(is_ad, score)), 3)


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (download, preprocessed images)")
    parser.add_argument("--raw", type=Path, default=None, help="an existing synthetic download (default: generate)")
    parser.add_argument("--sessions", choices=["all", "ends"], default="all")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep sessions already preprocessed under --work")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path, default=None, help="PNG of four example scans (optional)")
    args = parser.parse_args(argv)
    cfg = demo_config()
    t0 = time.perf_counter()
    raw = args.raw or generate(args.work / "raw", cfg["data"]["synthetic"])
    t_gen = time.perf_counter() - t0
    table = preprocess(raw, visits(raw, args.sessions), args.work / "preproc", cfg, args.jobs, args.reuse)
    failed = table[table.image == ""]
    table = table[table.image != ""].reset_index(drop=True)
    vols, affine = load_inputs(list(table.image), cfg["images"])
    features = block_features(vols)
    rois = csf_voxels(vols, affine)
    age, groups = table.age_at_scan.to_numpy(), table.ptid.to_numpy()
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(0, 6, 13)))
    volumes = [c for c in table.columns if c.endswith("_ml") and c != "icv_ml"]
    planted = table[volumes].div(table.icv_ml, axis=0).to_numpy()
    adcn = table.diagnosis.isin(["AD", "CN"]).to_numpy()
    cn, ad = (table.diagnosis == "CN").to_numpy(), (table.diagnosis == "AD").to_numpy()
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
    result = {
        "sessions": len(table),
        "subjects": int(table.ptid.nunique()),
        "excluded": failed.reason.tolist(),
        "selection": args.sessions,
        "images": cfg["images"],
        "synthetic": cfg["data"]["synthetic"],
        "age_from_images": leave_subject_out_age(features, age, groups, ridge),
        "age_from_planted_volumes": leave_subject_out_age(planted, age, groups, LinearRegression()),
        "ad_vs_cn_auc_from_images": leave_subject_out_ad(
            features[adcn], (table.diagnosis[adcn] == "AD").to_numpy(), groups[adcn], logistic
        ),
        "ad_cn_sessions": int(adcn.sum()),
        "roi_csf_voxels": {
            name: {
                "r_age": round(float(np.corrcoef(rois[name], age)[0, 1]), 3),
                "r_age_cn": round(float(np.corrcoef(rois[name][cn], age[cn])[0, 1]), 3),
                "auc_ad_vs_cn": round(float(roc_auc_score(table.diagnosis[adcn] == "AD", rois[name][adcn])), 3),
                "mean_cn": round(float(rois[name][cn].mean()), 1),
                "mean_ad": round(float(rois[name][ad].mean()), 1),
            }
            for name in rois
        },
        "age_from_roi_csf_voxels": leave_subject_out_age(rois.to_numpy(), age, groups, LinearRegression()),
        "seconds": {
            "generate": round(t_gen, 1),
            "preprocess_mean": round(float(table.seconds.mean()), 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
    }
    if args.figure:
        example_figure(table, vols, affine, args.figure)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
