"""Quality control of the preprocessing: per-session metrics and picture, and the cohort QC table.

`ldae preproc-qc` gathers every session's QC record (written by `ldae preprocess`, pass or excluded) into
`qc.tsv` at the derivatives root: one row per session with status, reason, registration similarity to the
template, brain volume and the preprocessed image path RELATIVE to the derivatives root ("" if excluded).
Downstream training rules find their images through this table only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import numpy as np

from ldae import files

QC_COLUMNS = [
    "participant_id",
    "session_id",
    "status",
    "reason",
    "similarity",
    "brain_volume_ml",
    "mask_overlap",
    "preproc",
    "mask",
    "transform",
    "qc_png",
    "seconds",
]
PASS, EXCLUDED = "pass", "excluded"


def normalised_correlation(image, template, mask) -> float:
    """Pearson correlation of two images on the same grid inside `mask` (arrays or ANTs images)."""
    a, b, m = (np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float64) for x in (image, template, mask))
    inside = m > 0.5
    x, y = a[inside], b[inside]
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def dice(a, b) -> float:
    a = np.asarray(a.numpy() if hasattr(a, "numpy") else a) > 0.5
    b = np.asarray(b.numpy() if hasattr(b, "numpy") else b) > 0.5
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else 0.0


def volume_ml(mask) -> float:
    spacing = np.prod(mask.spacing)
    return float((mask.numpy() > 0.5).sum() * spacing / 1000.0)


def qc_picture(image, template_mask, path: str, title: str = "") -> None:
    """Three orthogonal slices (sagittal, coronal, axial through the brain's centre) of `image` with the
    template brain outline in red; written with matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from ldae.preprocess.skullstrip import ants_to_nib

    data = np.asarray(nib.as_closest_canonical(ants_to_nib(image)).dataobj)
    outline = np.asarray(nib.as_closest_canonical(ants_to_nib(template_mask)).dataobj) > 0.5
    inside = np.argwhere(outline) if outline.any() else np.argwhere(np.ones_like(outline))
    cx, cy, cz = ((inside.min(0) + inside.max(0)) // 2).tolist()
    vmax = float(np.percentile(data[data > 0], 99.5)) if (data > 0).any() else 1.0
    views = [
        ("sagittal", data[cx, :, :].T, outline[cx, :, :].T),
        ("coronal", data[:, cy, :].T, outline[:, cy, :].T),
        ("axial", data[:, :, cz].T, outline[:, :, cz].T),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=80)
    for ax, (name, slab, edge) in zip(axes, views):
        ax.imshow(slab, cmap="gray", origin="lower", vmin=0, vmax=vmax, interpolation="nearest")
        if edge.any() and not edge.all():
            ax.contour(edge.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def read_record(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def table_row(record: dict) -> dict:
    metrics = record.get("metrics", {})
    outputs = record.get("outputs", {}) if record.get("status") == PASS else {}
    return {
        "participant_id": record["participant_id"],
        "session_id": record["session_id"],
        "status": record["status"],
        "reason": record.get("reason", ""),
        "similarity": metrics.get("similarity"),
        "brain_volume_ml": metrics.get("brain_volume_ml"),
        "mask_overlap": metrics.get("mask_overlap"),
        "preproc": outputs.get("image", ""),
        "mask": outputs.get("mask", ""),
        "transform": outputs.get("transform", ""),
        "qc_png": outputs.get("qc_png", ""),
        "seconds": record.get("seconds"),
    }


def summary_line(rows: list[dict]) -> str:
    passed = sum(r["status"] == PASS for r in rows)
    failed = len(rows) - passed
    reasons = Counter(_reason_kind(r["reason"]) for r in rows if r["status"] != PASS)
    detail = "; ".join(f"{kind}: {n}" for kind, n in reasons.most_common())
    return f"preprocess QC: {passed} of {len(rows)} sessions passed, {failed} excluded" + (
        f" ({detail})" if detail else ""
    )


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0].split("(")[0].strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from ldae.preprocess import naming, templates

    parser = argparse.ArgumentParser(
        prog="ldae preproc-qc", description="gather per-session QC into the cohort QC table"
    )
    parser.add_argument("--sessions", required=True, help="session table (participant_id, session_id, ...)")
    parser.add_argument("--derivatives", required=True, help="derivatives root (holds every session's QC record)")
    parser.add_argument("--out", required=True, help="the cohort QC table to write (qc.tsv)")
    parser.add_argument("--config-json", default="{}", help="the preprocess config section (JSON)")
    parser.add_argument("--montage", default="", help="also draw the worst passed sessions' QC pictures here")
    parser.add_argument("--montage-count", type=int, default=12, help="sessions in the montage")
    args = parser.parse_args(argv)

    cfg = json.loads(args.config_json)
    registration = cfg.get("registration", {})
    space = templates.space_label(registration)
    sessions = pd.read_csv(args.sessions, sep="\t", dtype=str)
    rows, missing = [], []
    for participant, session in zip(sessions["participant_id"], sessions["session_id"]):
        paths = naming.preproc_paths(args.derivatives, participant, session, space, registration.get("type", "affine"))
        if not os.path.exists(paths.qc_json):
            missing.append(paths.qc_json)
            continue
        rows.append(table_row(read_record(paths.qc_json)))
    if missing:
        print(f"ldae preproc-qc: {len(missing)} QC records missing, e.g. {missing[0]}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows, columns=QC_COLUMNS)
    files.write_tsv(table, args.out, na_rep="", float_format="%.4f")
    line = summary_line(rows)
    if args.montage:
        montage(table, args.derivatives, args.montage, line, args.montage_count)
    for reason, group in table[table.status != PASS].groupby("reason"):
        print(f"  excluded ({len(group)}): {reason}", file=sys.stderr)
    print(line, file=sys.stderr)
    print(line)  # stdout is not redirected by the rule: the summary shows in Snakemake's own output
    if rows and not any(r["status"] == PASS for r in rows):
        print("ldae preproc-qc: no session passed preprocessing; see the reasons above", file=sys.stderr)
        return 1
    return 0


def montage(table, root: str, path: str, title: str, count: int = 12) -> None:
    """The QC pictures of the `count` passed sessions least similar to the template, worst first, tiled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    passed = table[(table.status == PASS) & (table.qc_png != "")].sort_values("similarity").head(count)
    columns = 3
    rows = max(1, -(-len(passed) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 1.6 * rows + 0.6), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), passed.iterrows()):
        ax.imshow(mpimg.imread(os.path.join(root, row.qc_png)))
    if passed.empty:
        axes[0, 0].text(0.5, 0.5, "no session passed", ha="center", va="center")
    fig.suptitle(f"{title}\nleast similar to the template first", fontsize=9)
    fig.tight_layout()
    with files.atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
