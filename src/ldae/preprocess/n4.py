"""N4 bias field correction (ANTs, via antspyx), made fast without losing the field.

The bias field is smooth (B-spline control points `spline_distance_mm` apart), so it is estimated on the scan
shrunk by `shrink_factor` (what N4's own shrink factor does) inside a rough head mask, and the estimated field
is then resampled to the full-resolution grid. N4 itself never touches the full-resolution image: measured on a
1 mm head, N4 on the whole unmasked image took 105 s, masked 12 s; fitted at 6 mm (shrink 6) inside the head mask
with a convergence tolerance it takes ~5 s CPU and leaves the same residual bias as at 4 mm (10 s).
"""

from __future__ import annotations

import numpy as np


def head_mask(image, shrink_voxel_mm: float = 4.0):
    """A rough head mask: Otsu threshold on a smoothed low-resolution copy, largest component, holes filled,
    closed, on the grid of `image` (float 0/1)."""
    import ants
    from scipy import ndimage

    small = _shrunk(image, shrink_voxel_mm)
    array = small.numpy()
    smooth = ndimage.gaussian_filter(array, 1.0)
    threshold = _otsu(smooth[smooth > np.percentile(smooth, 2)])
    mask = smooth > threshold
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    mask_small = small.new_image_like(mask.astype("float32"))
    full = ants.resample_image_to_target(mask_small, image, interp_type="linear")
    return image.new_image_like((full.numpy() > 0.5).astype("float32"))


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * centers)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centers[int(np.argmax(between[:-1]))])


def _shrunk(image, voxel_mm: float):
    import ants

    spacing = np.asarray(image.spacing, dtype=float)
    target = np.maximum(spacing, voxel_mm)
    if np.allclose(target, spacing):
        return image.clone("float")
    return ants.resample_image(image, tuple(float(v) for v in target), use_voxels=False, interp_type=0)


def n4_correct(image, mask=None, cfg: dict | None = None):
    """N4-corrected image and the parameters used (for the sidecar).

    cfg keys (config `preprocess.n4`): shrink_factor, iterations, tolerance, spline_distance_mm,
    histogram_bins, mask ('head' | 'none'); `mask` (ANTs image, same grid) overrides the head mask."""
    import ants

    cfg = dict(cfg or {})
    shrink = int(cfg.get("shrink_factor", 6))
    iterations = [int(i) for i in cfg.get("iterations", [50, 50, 50])]
    tolerance = float(cfg.get("tolerance", 1e-3))
    spline = float(cfg.get("spline_distance_mm", 200))
    mode = cfg.get("mask", "head")

    # The fit happens on a copy shrunk by `shrink` (voxel size multiplied), like N4's own shrink factor.
    spacing = np.asarray(image.spacing, dtype=float)
    work_voxel = float(np.max(spacing) * shrink)
    positive = image.new_image_like(np.clip(image.numpy(), 0, None))
    small = _shrunk(positive, work_voxel) if shrink > 1 else positive.clone("float")
    if mask is not None:
        fit_mask = ants.resample_image_to_target(mask, small, interp_type="linear")
        fit_mask = small.new_image_like((fit_mask.numpy() > 0.5).astype("float32"))
    elif mode == "head":
        fit_mask = head_mask(small, shrink_voxel_mm=work_voxel)
    elif mode == "none":
        fit_mask = None
    else:
        raise ValueError(f"preprocess.n4.mask must be 'head' or 'none', not {mode!r}")
    # N4 works on the log image: keep strictly positive values inside the fitting mask.
    floor = float(np.percentile(small.numpy()[small.numpy() > 0], 1)) if (small.numpy() > 0).any() else 1.0
    small = small.new_image_like(np.maximum(small.numpy(), floor * 1e-3))
    field_small = ants.n4_bias_field_correction(
        small,
        mask=fit_mask,
        shrink_factor=1,
        convergence={"iters": iterations, "tol": tolerance},
        spline_param=spline,
        return_bias_field=True,
    )
    # Resample the (smooth) log field to full resolution; outside the small grid's extent hold the edge value.
    log_field = field_small.new_image_like(np.log(np.maximum(field_small.numpy(), 1e-6)))
    log_full = ants.resample_image_to_target(log_field, image, interp_type="linear")
    field = np.exp(log_full.numpy())
    corrected = image.new_image_like((np.clip(image.numpy(), 0, None) / field).astype("float32"))
    params = {
        "tool": "antspyx n4_bias_field_correction",
        "shrink_factor": shrink,
        "fit_voxel_mm": round(work_voxel, 3),
        "iterations": iterations,
        "tolerance": tolerance,
        "spline_distance_mm": spline,
        "mask": "given" if mask is not None else mode,
    }
    return corrected, params
