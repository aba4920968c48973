"""Reading one input T1w scan with the checks that decide whether a session can be preprocessed at all.

A bad input raises `Excluded(reason)`: the session goes to the QC table as excluded and the cohort goes on.
"""

from __future__ import annotations

import numpy as np


class Excluded(Exception):
    """The session cannot (or must not) be preprocessed; the message is the reason in the QC table."""


def nib_to_ants(image, data: np.ndarray | None = None):
    """A 3-D nibabel image as an ANTs image (RAS affine -> ITK LPS origin/spacing/direction).

    A slightly sheared affine is replaced by its nearest rotation (ITK directions are orthonormal)."""
    import ants

    affine = np.asarray(image.affine, dtype=np.float64)
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    u, _, vt = np.linalg.svd(direction)
    direction = u @ vt
    flip = np.diag([-1.0, -1.0, 1.0])
    array = np.asarray(image.dataobj if data is None else data, dtype=np.float32)
    return ants.from_numpy(
        array,
        origin=tuple(float(v) for v in flip @ affine[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=flip @ direction,
    )


def read_scan(path: str, min_voxel_mm: float, max_voxel_mm: float):
    """The scan as a float32 ANTs image, or `Excluded` with the reason why it cannot be used."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise Excluded(f"input file missing: {path}") from None
    except Exception as error:  # noqa: BLE001 - any reader failure means the file is unusable
        raise Excluded(f"unreadable image ({type(error).__name__}: {error})") from None
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) != 3:
        raise Excluded(f"not a 3-D image (shape {tuple(image.shape)})")
    if min(shape) < 8:
        raise Excluded(f"image too small to be a brain scan (shape {tuple(shape)})")
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    spacing = np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.linalg.matrix_rank(np.asarray(image.affine)[:3, :3]) < 3:
        raise Excluded(f"invalid voxel-to-world affine {np.asarray(image.affine).round(3).tolist()}")
    worst = [v for v in list(spacing) + zooms if not (min_voxel_mm <= v <= max_voxel_mm)]
    if worst:
        raise Excluded(
            f"absurd voxel size {[round(v, 4) for v in spacing]} mm "
            f"(allowed {min_voxel_mm}-{max_voxel_mm} mm, preprocess.qc.min/max_voxel_mm)"
        )
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except Exception as error:  # noqa: BLE001 - truncated/corrupt payloads fail here
        raise Excluded(f"corrupt image data ({type(error).__name__}: {error})") from None
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - finite.sum())
        raise Excluded(f"non-finite voxels (NaN/Inf in {bad} of {data.size} voxels)")
    if float(data.max()) == float(data.min()):
        raise Excluded(f"empty image (every voxel is {float(data.min()):g})")
    if float(np.percentile(data, 99.5)) <= 0:
        raise Excluded("empty image (no positive signal)")
    return nib_to_ants(image, data), {"shape": list(shape), "voxel_mm": [round(float(v), 4) for v in spacing]}
