"""Synthetic T1w head scans with a KNOWN pose, bias field and brain mask, for tests and the benchmark.

The source is the 1 mm MNI152NLin6Asym head template (with skull) and its brain mask vendored in ``ldae/resources``
(the synthetic ADNI generator's; 7-bit head intensities). A planted affine pose maps the scan's world coordinates to
template world coordinates; the scan is resampled on its own grid (any voxel size, orientation and field of view),
multiplied by a smooth bias field and given Gaussian noise. The ground-truth brain mask is resampled on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


def source_template_paths() -> tuple[Path, Path]:
    """(head T1w, brain mask) of MNI152NLin6Asym at 1 mm: the copies vendored in ``ldae/resources`` (the ones the
    synthetic ADNI generator uses; see its README for origin and licence)."""
    from ldae.data.synth_images import BRAIN_MASK, HEAD_T1

    return HEAD_T1, BRAIN_MASK


@lru_cache(maxsize=1)
def _source_arrays():
    import nibabel as nib

    head_path, mask_path = source_template_paths()
    head_img = nib.load(str(head_path))
    head = np.asarray(head_img.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(mask_path)).dataobj, dtype=np.float32)
    head.flags.writeable = mask.flags.writeable = False
    return head, mask, np.asarray(head_img.affine)


def rotation_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees), as a 3x3 matrix."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_matrix(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 world (RAS mm) transform scan -> template: x_template = R S x_scan + t."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix(rotation_deg) @ np.diag(scale)
    pose[:3, 3] = translation_mm
    return pose


@dataclass
class Phantom:
    image: object  # nibabel.Nifti1Image, float32
    brain_mask: object  # nibabel.Nifti1Image, uint8
    pose: np.ndarray  # 4x4, scan world (RAS) -> source template world (RAS)
    bias_field: np.ndarray  # the multiplicative field planted on the scan's grid

    def save(self, image_path, mask_path=None) -> None:
        self.image.to_filename(str(image_path))
        if mask_path is not None:
            self.brain_mask.to_filename(str(mask_path))


def make_phantom(
    voxel_mm: float = 1.0,
    rotation_deg=(6.0, -4.0, 8.0),
    translation_mm=(7.0, -12.0, 9.0),
    scale=(1.04, 0.97, 1.02),
    bias_strength: float = 0.25,
    noise: float = 0.02,
    seed: int = 0,
    orientation: str = "PIR",
    margin_mm: float = 8.0,
) -> Phantom:
    """A head scan of the source template under a planted pose, on a `voxel_mm` grid in `orientation`.

    `orientation` is the scan's axis code (e.g. "PIR" like many sagittal ADNI MPRAGEs, or "RAS"); the grid
    covers the posed head plus `margin_mm`. The bias field is exp(strength * smooth random field); noise is
    Gaussian with sd `noise` x the 99th percentile intensity.
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    head, mask, head_affine = _source_arrays()
    pose = pose_matrix(rotation_deg, translation_mm, scale)
    inv_pose = np.linalg.inv(pose)

    # Bounding box of the posed head in scan world space.
    ijk = np.argwhere(head > 0.02 * head.max())
    lo, hi = ijk.min(0), ijk.max(0)
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    world = (inv_pose @ head_affine @ corners.T).T[:, :3]
    wlo, whi = world.min(0) - margin_mm, world.max(0) + margin_mm

    # Grid in RAS first, then permuted/flipped to the requested orientation.
    shape_ras = np.ceil((whi - wlo) / voxel_mm).astype(int) + 1
    affine_ras = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine_ras[:3, 3] = wlo
    ornt = axcodes2ornt(tuple(orientation))
    shape = tuple(int(shape_ras[int(ax)]) for ax, _ in ornt)
    affine = affine_ras @ inv_ornt_aff(ornt, shape_ras)  # voxel (oriented) -> world

    # Template voxel coordinates of each scan voxel.
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    vox2tpl = np.linalg.inv(head_affine) @ pose @ affine
    coords = vox2tpl[:3, :3] @ grid + vox2tpl[:3, 3:4]
    data = ndimage.map_coordinates(head, coords, order=1, mode="constant", cval=0.0).reshape(shape)
    truth = ndimage.map_coordinates(mask, coords, order=1, mode="constant", cval=0.0).reshape(shape) > 0.5

    # Smooth multiplicative bias field: low-frequency random field over the image extent.
    bias = np.ones(shape, dtype=np.float32)
    if bias_strength > 0:
        small = rng.standard_normal((4, 4, 4))
        field = ndimage.zoom(small, [s / 4 for s in shape], order=3)[: shape[0], : shape[1], : shape[2]]
        field = field / (np.abs(field).max() + 1e-8)
        bias = np.exp(bias_strength * field).astype(np.float32)
        data = data * bias
    if noise > 0:
        data = data + rng.normal(0.0, noise * np.percentile(data, 99), size=shape).astype(np.float32)
        data = np.abs(data)  # magnitude images are non-negative (Rician-like floor)
    image = nib.Nifti1Image(data.astype(np.float32), affine)
    image.header.set_xyzt_units("mm")
    brain = nib.Nifti1Image(truth.astype(np.uint8), affine)
    return Phantom(image=image, brain_mask=brain, pose=pose, bias_field=bias)


def pose_error_mm(fixed_to_moving_lps: np.ndarray, pose: np.ndarray, points_ras: np.ndarray) -> float:
    """Mean distance (mm) between where an estimated ANTs affine (fixed=template -> moving=scan, ITK LPS)
    and the planted pose (scan -> template, RAS) send template points `points_ras` (N x 3)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    estimated = flip @ fixed_to_moving_lps @ flip  # RAS, template -> scan
    truth = np.linalg.inv(pose)
    homog = np.c_[points_ras, np.ones(len(points_ras))]
    diff = (estimated @ homog.T - truth @ homog.T)[:3]
    return float(np.linalg.norm(diff, axis=0).mean())


def brain_points_ras(step: int = 4) -> np.ndarray:
    """World (RAS) coordinates of every `step`-th voxel of the source template's brain mask."""
    import nibabel as nib

    _, mask_path = source_template_paths()
    image = nib.load(str(mask_path))
    ijk = np.argwhere(np.asarray(image.dataobj)[::step, ::step, ::step] > 0.5) * step
    return (image.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
