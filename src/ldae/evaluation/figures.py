"""Figures 5-8 (matplotlib, Agg backend; PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["placeholder_figure", "mid_slices", "figure5_lda", "lda_projection", "figure8_interpolation", "manipulation_montage",
           "reconstruction_examples"]

COLOURS = {"CN": "#1b9e77", "MCI": "#7570b3", "AD": "#d95f02"}
VIEWS = ("axial", "coronal", "sagittal")


def _save(fig, path: str | os.PathLike) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def placeholder_figure(path: str | os.PathLike, message: str) -> None:
    """A figure that says why there is nothing to plot (tiny cohorts: e.g. no test subject with 3 visits)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    ax.set_axis_off()
    _save(fig, path)


def mid_slices(volume: np.ndarray, index: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Axial / coronal / sagittal slices of an (X, Y, Z) RAS volume through ``index`` (default: the centre),
    rotated for display (anterior/superior up)."""
    v = np.asarray(volume)
    i, j, k = index if index is not None else [s // 2 for s in v.shape]
    return {"axial": np.rot90(v[:, :, k]), "coronal": np.rot90(v[:, j, :]), "sagittal": np.rot90(v[i, :, :])}


def lda_projection(X_train: np.ndarray, labels_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D linear discriminant projection fitted on the (z-scored) training embeddings, applied to the test ones.

    With three diagnoses LDA gives two discriminant axes; with two, the second axis is the first principal
    component of the LDA-residual training embeddings. Returns (test coordinates, axis description)."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    Xt, Xs = scaler.transform(X_train), scaler.transform(X_test)
    classes = np.unique(labels_train)
    lda = LinearDiscriminantAnalysis(n_components=min(2, len(classes) - 1), solver="eigen", shrinkage="auto")
    lda.fit(Xt, labels_train)
    if len(classes) >= 3:
        return lda.transform(Xs)[:, :2], "LD1 / LD2"
    w = lda.scalings_[:, 0] / np.linalg.norm(lda.scalings_[:, 0])
    residual = Xt - np.outer(Xt @ w, w)
    pc = PCA(n_components=1, random_state=0).fit(residual).components_[0]
    return np.stack([Xs @ w, Xs @ pc], axis=1), "LD1 / PC1 of the residual"


def figure5_lda(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                path: str | os.PathLike, diagnoses: Sequence[str] = ("CN", "AD")) -> None:
    """One panel per model: test embeddings projected on the 2-D LDA fitted on probe_train, coloured by diagnosis.

    ``panels[name] = (X_train, diagnosis_train, X_test, diagnosis_test)``."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no embeddings", ha="center", va="center")
    for ax, (name, (Xtr, dtr, Xte, dte)) in zip(axes[0], panels.items()):
        classes, counts = np.unique(np.asarray(dtr), return_counts=True)
        if len(classes) < 2 or len(Xte) == 0 or counts.min() < 2:
            ax.text(0.5, 0.5, f"{name}: too few training scans per diagnosis\nor no test scan for an LDA",
                    ha="center", va="center", fontsize=8)
            ax.set_axis_off()
            continue
        coords, how = lda_projection(Xtr, np.asarray(dtr), Xte)
        for diag in diagnoses:
            sel = np.asarray(dte) == diag
            ax.scatter(coords[sel, 0], coords[sel, 1], s=14, alpha=0.75, c=COLOURS.get(diag, "grey"),
                       label=f"{diag} (n={int(sel.sum())})", edgecolors="none")
        ax.set_title(name)
        ax.set_xlabel(how.split(" / ")[0])
        ax.set_ylabel(how.split(" / ")[1])
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle("Figure 5 - 2-D LDA projection of the test embeddings (fitted on probe_train)", fontsize=10)
    _save(fig, path)


def figure8_interpolation(results: pd.DataFrame, example: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """SSIM and MSE vs time gap, prediction gap and relative position (mean +- sd; dashed: nearest-visit
    reference), plus one example triplet (start, real target's AE reconstruction, generated target, end)."""
    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1])
    strata = [("time_gap", "time gap: end - start (months)"),
              ("prediction_gap", "prediction gap (months)"),
              ("alpha", "relative position alpha")]
    for col, (key, label) in enumerate(strata):
        ax_s = fig.add_subplot(grid[0, col])
        ax_m = fig.add_subplot(grid[1, col])
        values = results[key]
        if key == "alpha":
            values = (values * 4).clip(upper=3.999).astype(int) / 4 + 0.125  # quarter bins, centred
        g = results.assign(_k=values).groupby("_k")
        for ax, metric in ((ax_s, "ssim"), (ax_m, "mse")):
            mean, sd = g[metric].mean(), g[metric].std().fillna(0)
            ax.errorbar(mean.index, mean.values, yerr=sd.values, marker="o", capsize=3, label="LDAE interpolation")
            ref = g[f"nearest_{metric}"].mean()
            ax.plot(ref.index, ref.values, ls="--", marker="x", color="grey", label="nearest visit (reference)")
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
        ax_m.set_xlabel(label)
        if col == 0:
            ax_s.legend(fontsize=8, frameon=False)
    names = ["start", "target", "generated", "end"]
    titles = {"start": "start (AE recon.)", "target": "target (AE recon.)", "generated": "generated target",
              "end": "end (AE recon.)"}
    sub = grid[:, 3].subgridspec(len(names), 1)
    for r, name in enumerate(names):
        ax = fig.add_subplot(sub[r, 0])
        if name in example:
            ax.imshow(mid_slices(example[name])["axial"], cmap="gray", vmin=0, vmax=1)
        ax.set_title(titles[name], fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Figure 8 - interpolation of {len(results)} triplets "
                 f"({results.participant_id.nunique()} test subjects)", fontsize=11)
    _save(fig, path)


def manipulation_montage(volumes: np.ndarray, scales: Sequence[float], path: str | os.PathLike, title: str,
                         original: np.ndarray | None = None, probabilities: Sequence[float] | None = None) -> None:
    """Rows = scales; columns = axial/coronal/sagittal slices and their difference to scale 0 (red: brighter)."""
    volumes = np.asarray(volumes)
    rows = len(scales) + (original is not None)
    fig, axes = plt.subplots(rows, 6, figsize=(12, 2.0 * rows), squeeze=False)
    diff_max = max(float(np.abs(volumes - volumes[0]).max()), 1e-6)
    r = 0
    if original is not None:
        for c, view in enumerate(VIEWS):
            axes[r, c].imshow(mid_slices(original)[view], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(f"input, {view}", fontsize=8)
            axes[r, 3 + c].set_axis_off()
        r += 1
    for i, s in enumerate(scales):
        base, cur = mid_slices(volumes[0]), mid_slices(volumes[i])
        for c, view in enumerate(VIEWS):
            axes[r, c].imshow(cur[view], cmap="gray", vmin=0, vmax=1)
            axes[r, 3 + c].imshow(cur[view] - base[view], cmap="RdBu_r", vmin=-diff_max, vmax=diff_max)
            if r == 0 or (original is not None and r == 1):
                axes[r, 3 + c].set_title(f"difference, {view}", fontsize=8)
        label = f"s = {s:g}"
        if probabilities is not None:
            label += f"\np = {probabilities[i]:.2f}"
        axes[r, 0].set_ylabel(label, fontsize=8)
        r += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def reconstruction_examples(examples: Mapping[str, np.ndarray], path: str | os.PathLike, sample: int = 0) -> None:
    """Axial mid-slices of one test scan and its reconstructions (one column per row of Table 6 and T)."""
    keys = ["input"] + [k for k in examples if k != "input"]
    n = len(keys)
    cols = min(n, 6)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, key in zip(axes.ravel(), keys):
        ax.imshow(mid_slices(examples[key][sample])["axial"], cmap="gray", vmin=0, vmax=1)
        ax.set_title(key.replace(" + ", "+\n").replace("encoded x_T", "enc. x_T"), fontsize=7)
    fig.suptitle("Table 6 - example reconstructions (axial mid-slice, one test scan)", fontsize=10)
    _save(fig, path)
