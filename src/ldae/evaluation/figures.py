"""Figures 5-8 (matplotlib, Agg backend; PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ldae.files import atomic_output  # noqa: E402

__all__ = [
    "placeholder_figure",
    "mid_slices",
    "intensity_window",
    "figure5_lda",
    "lda_projection",
    "figure8_interpolation",
    "manipulation_montage",
    "reconstruction_examples",
]

COLOURS = {"CN": "#1b9e77", "MCI": "#7570b3", "AD": "#d95f02"}
VIEWS = ("axial", "coronal", "sagittal")


def intensity_window(volumes: Sequence[np.ndarray], upper_percentile: float = 99.5) -> tuple[float, float]:
    """One grey window for several volumes: from min(0, the 0.5th percentile) to the ``upper_percentile`` of the
    foreground voxels (> 1% of the largest value), so that a few bright voxels do not wash the brain out."""
    values = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in volumes])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low = min(0.0, float(np.percentile(values, 0.5)))
    top = float(values.max())
    foreground = values[values > low + 0.01 * (top - low)]
    high = float(np.percentile(foreground, upper_percentile)) if foreground.size else top
    return low, high if high > low else low + 1.0


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
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


def figure5_lda(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    diagnoses: Sequence[str] = ("CN", "AD"),
) -> None:
    """One panel per model: test embeddings projected on the 2-D LDA fitted on probe_train, coloured by diagnosis.

    ``panels[name] = (X_train, diagnosis_train, X_test, diagnosis_test)``."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no embeddings", ha="center", va="center")
    for ax, (name, (Xtr, dtr, Xte, dte)) in zip(axes[0], panels.items()):
        classes, counts = np.unique(np.asarray(dtr), return_counts=True)
        if len(classes) < 2 or len(Xte) == 0 or counts.min() < 2:
            ax.text(
                0.5,
                0.5,
                f"{name}: too few training scans per diagnosis\nor no test scan for an LDA",
                ha="center",
                va="center",
                fontsize=8,
            )
            ax.set_axis_off()
            continue
        coords, how = lda_projection(Xtr, np.asarray(dtr), Xte)
        for diag in diagnoses:
            sel = np.asarray(dte) == diag
            ax.scatter(
                coords[sel, 0],
                coords[sel, 1],
                s=14,
                alpha=0.75,
                c=COLOURS.get(diag, "grey"),
                label=f"{diag} (n={int(sel.sum())})",
                edgecolors="none",
            )
        ax.set_title(name)
        ax.set_xlabel(how.split(" / ")[0])
        ax.set_ylabel(how.split(" / ")[1])
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle("Figure 5 - 2-D LDA projection of the test embeddings (fitted on probe_train)", fontsize=10)
    _save(fig, path)


def figure8_interpolation(results: pd.DataFrame, example: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """SSIM and MSE vs time gap, prediction gap and relative position (mean +- sd; dashed: nearest-visit
    reference), plus one example triplet (start, real target's AE reconstruction, generated target, end, and the
    generated - target difference), the grey panels in one stated window."""
    fig = plt.figure(figsize=(13, 11), layout="constrained")
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1.05])
    top = grid[:2].subgridspec(2, 3)
    strata = [
        ("time_gap", "time gap: end - start (months)"),
        ("prediction_gap", "prediction gap (months)"),
        ("alpha", "relative position alpha"),
    ]
    for col, (key, label) in enumerate(strata):
        ax_s = fig.add_subplot(top[0, col])
        ax_m = fig.add_subplot(top[1, col])
        values = results[key]
        if key == "alpha":
            values = (values * 4).clip(upper=3.999).astype(int) / 4 + 0.125  # quarter bins, centred
        g = results.assign(_k=values).groupby("_k")
        for ax, metric in ((ax_s, "ssim"), (ax_m, "mse")):
            mean, sd = g[metric].mean(), g[metric].std().fillna(0)
            ax.errorbar(mean.index, mean.values, yerr=sd.values, marker="o", capsize=3, label="LDAE interpolation")
            ref = g[f"nearest_{metric}"].mean()
            ax.plot(ref.index, ref.values, ls="--", marker="x", color="grey", label="nearest visit (reference)")
            ax.set_ylabel(metric.upper(), fontsize=11)
            ax.tick_params(labelsize=9)
            ax.grid(alpha=0.3)
        ax_m.set_xlabel(label, fontsize=11)
        if col == 0:
            ax_s.legend(fontsize=9, frameon=False)
    _interpolation_example(fig, grid[2], example)
    fig.suptitle(
        f"Figure 8 - interpolation of {len(results)} triplets ({results.participant_id.nunique()} test subjects)",
        fontsize=13,
    )
    _save(fig, path)


def _interpolation_example(fig, cell, example: Mapping[str, np.ndarray]) -> None:
    """One triplet as axial mid-slices in one grey window, and generated - target on a diverging colour bar."""
    names = ["start", "target", "generated", "end"]
    titles = {
        "start": "start (AE recon.)",
        "target": "real target (AE recon.)",
        "generated": "generated target",
        "end": "end (AE recon.)",
    }
    axes = cell.subgridspec(1, 5).subplots()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    present = [example[n] for n in names if n in example]
    vmin, vmax = intensity_window(present) if present else (0.0, 1.0)
    for ax, name in zip(axes, names):
        if name in example:
            ax.imshow(mid_slices(example[name])["axial"], cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(titles[name], fontsize=11)
    axes[0].set_ylabel(f"example triplet\nwindow [{vmin:.2f}, {vmax:.2f}]", fontsize=11)
    if "generated" in example and "target" in example:
        diff = mid_slices(np.asarray(example["generated"]) - np.asarray(example["target"]))["axial"]
        limit = max(float(np.abs(diff).max()), 1e-6)
        image = axes[4].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
        bar = fig.colorbar(image, ax=axes[4], fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=9)
        axes[4].set_title("generated - real target", fontsize=11)


def manipulation_montage(
    volumes: np.ndarray,
    scales: Sequence[float],
    path: str | os.PathLike,
    title: str,
    original: np.ndarray | None = None,
    probabilities: Sequence[float] | None = None,
    probability_label: str = "p",
) -> None:
    """Rows = scales s; columns = axial/coronal/sagittal slices of the decoded scan and their difference to s = 0
    (one diverging colour bar: red brighter, blue darker than at s = 0). Every grey panel shares one window."""
    volumes = np.asarray(volumes)
    rows = len(scales) + (original is not None)
    fig, axes = plt.subplots(rows, 6, figsize=(13.5, 2.2 * rows + 0.8), squeeze=False, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    vmin, vmax = intensity_window([volumes] + ([original] if original is not None else []))
    diffs = volumes - volumes[0]
    diff_max = max(float(np.percentile(np.abs(diffs), 99.9)), 1e-6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    r = 0
    if original is not None:
        for c, view in enumerate(VIEWS):
            axes[r, c].imshow(mid_slices(original)[view], cmap="gray", vmin=vmin, vmax=vmax)
            axes[r, c].set_title(view, fontsize=11)
        axes[r, 0].set_ylabel("input scan", fontsize=11)
        axes[r, 4].text(
            0.5,
            0.3,
            "difference maps below:\ndecoded(s) - decoded(s = 0)",
            ha="center",
            va="center",
            fontsize=11,
            transform=axes[r, 4].transAxes,
        )
        r += 1
    image = None
    for i, s in enumerate(scales):
        base, cur = mid_slices(volumes[0]), mid_slices(volumes[i])
        for c, view in enumerate(VIEWS):
            axes[r, c].imshow(cur[view], cmap="gray", vmin=vmin, vmax=vmax)
            image = axes[r, 3 + c].imshow(cur[view] - base[view], cmap="RdBu_r", vmin=-diff_max, vmax=diff_max)
            if r == 0:
                axes[r, c].set_title(view, fontsize=11)
            if i == 0 or r == 0:
                axes[r, 3 + c].set_title(f"difference, {view}", fontsize=11)
        label = f"s = {s:g}"
        if probabilities is not None:
            label += f"\n{probability_label} = {probabilities[i]:.2f}"
        axes[r, 0].set_ylabel(label, fontsize=11)
        r += 1
    bar = fig.colorbar(image, ax=axes[rows - len(scales) :, 5].tolist(), aspect=12 * len(scales), pad=0.02)
    bar.set_label("decoded(s) - decoded(s = 0)  (red: brighter)", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    fig.suptitle(f"{title}\ngrey panels: one intensity window [{vmin:.2f}, {vmax:.2f}]", fontsize=12)
    _save(fig, path)


def _reconstruction_rows(examples: Mapping[str, np.ndarray]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Keys '<model> <encoding> T=<T>' grouped by Table 6 row: ({row: {T: volumes}}, the T values in order)."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in examples.items():
        if key == "input":
            continue
        row, _, steps = key.rpartition(" T=")
        row, steps = (row, steps) if row else (key, "-")
        grouped.setdefault(row.replace(" - ", " ").removesuffix(" -"), {})[steps] = value
    steps = sorted(
        {t for cols in grouped.values() for t in cols if t != "-"}, key=lambda t: int(t) if t.isdigit() else 0
    )
    return grouped, steps


def reconstruction_examples(examples: Mapping[str, np.ndarray], path: str | os.PathLike, sample: int = 0) -> None:
    """Axial mid-slices of one test scan: one row per Table 6 row (model, encoding), the input first and the
    reconstruction at each T beside it, all panels of a row in one stated intensity window."""
    grouped, steps = _reconstruction_rows(examples)
    cols = 1 + max(1, len(steps))
    rows = max(1, len(grouped))
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.1 * cols + 1.0, 2.3 * rows + 0.7), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    source = examples["input"][sample]
    for r, (row, by_steps) in enumerate(grouped.items()):
        vmin, vmax = intensity_window([source] + [v[sample] for v in by_steps.values()])
        axes[r, 0].imshow(mid_slices(source)["axial"], cmap="gray", vmin=vmin, vmax=vmax)
        label = _wrap_row(row)
        shapes = {tuple(v[sample].shape) for v in by_steps.values()} - {tuple(source.shape)}
        if shapes:  # e.g. the DAE works at half resolution
            label += "\nat " + ", ".join("x".join(str(n) for n in shape) for shape in sorted(shapes)) + " voxels"
        axes[r, 0].set_ylabel(label + f"\nwindow [{vmin:.2f}, {vmax:.2f}]", fontsize=10)
        panels = [("-", "reconstruction")] if "-" in by_steps else [(t, f"T = {t}") for t in steps if t in by_steps]
        for c, (t, name) in enumerate(panels, start=1):
            axes[r, c].imshow(mid_slices(by_steps[t][sample])["axial"], cmap="gray", vmin=vmin, vmax=vmax)
            axes[r, c].set_title(name, fontsize=10)
        axes[r, 0].set_title("input", fontsize=10)
    fig.suptitle(
        "Table 6 - example reconstructions beside the input (axial mid-slice of one test scan);\n"
        "each row shares one intensity window, given under its name",
        fontsize=12,
    )
    _save(fig, path)


def _wrap_row(row: str) -> str:
    """'LDAE (b) y_sem + encoded x_T' -> 'LDAE (b)\ny_sem + encoded x_T' (row labels of the examples figure)."""
    for marker in (" (a) ", " (b) "):
        if marker in row:
            model, rest = row.split(marker, 1)
            return f"{model}{marker.rstrip()}\n{rest}"
    return row.replace(" encoded", "\nencoded")
