"""The MONAI inference-time transforms shared by every training/evaluation stage (ldae.data.transforms)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

import ldae
from ldae.data.transforms import build_transforms, describe


def _write(path, shape, voxel, value=None):
    rng = np.random.default_rng(0)
    data = rng.uniform(10.0, 50.0, shape).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    nib.Nifti1Image(data, np.diag([voxel, voxel, voxel, 1.0])).to_filename(str(path))
    return str(path)


def test_resample_pad_crop_and_scale(tmp_path):
    # 40 x 30 x 20 voxels of 2 mm = 80 x 60 x 40 mm -> 3 mm: about 27 x 20 x 14, then pad/crop to 24 x 24 x 16
    path = _write(tmp_path / "a.nii.gz", (40, 30, 20), 2.0)
    out = build_transforms({"spacing_mm": 3.0, "shape": [24, 24, 16]})({"image": path})["image"]
    assert tuple(out.shape) == (1, 24, 24, 16)
    assert out.dtype == torch.float32
    assert float(out.min()) == pytest.approx(0.0) and float(out.max()) == pytest.approx(1.0)
    spacing = np.linalg.norm(np.asarray(out.affine)[:3, :3], axis=0)
    assert np.allclose(spacing, 3.0)


def test_padding_uses_the_image_minimum(tmp_path):
    # a small bright cube on a background of 5: padding ('minimum') must equal the background -> 0 after scaling
    data = np.full((10, 10, 10), 5.0, np.float32)
    data[3:7, 3:7, 3:7] = 100.0
    path = tmp_path / "b.nii.gz"
    nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])).to_filename(str(path))
    out = build_transforms({"spacing_mm": 1.5, "shape": [16, 16, 16]})({"image": str(path)})["image"][0]
    assert tuple(out.shape) == (16, 16, 16)
    border = torch.cat([out[0].flatten(), out[-1].flatten(), out[:, 0].flatten(), out[:, :, -1].flatten()])
    assert torch.allclose(border, torch.zeros_like(border), atol=1e-4)
    assert float(out.max()) == pytest.approx(1.0)


def test_bspline_resampling_is_cubic(tmp_path):
    """Order-3 spline: a linear ramp is reproduced exactly inside the volume (linear would too, nearest not),
    and a smooth quadratic is closer than with linear interpolation."""
    x = np.arange(24, dtype=np.float32)
    ramp = np.broadcast_to((x[:, None, None] - 12) ** 2, (24, 24, 24)).astype(np.float32)
    path = tmp_path / "c.nii.gz"
    nib.Nifti1Image(np.ascontiguousarray(ramp), np.eye(4)).to_filename(str(path))
    cfg = {"spacing_mm": 0.5, "shape": [48, 48, 48], "interpolation": "bspline"}
    out = build_transforms(cfg)({"image": str(path)})["image"][0].numpy()
    # undo the min-max scaling with the known range and compare in the interior against the true parabola
    grid = np.arange(48) * 0.5
    truth = (grid - 12) ** 2
    profile = out[:, 24, 24] * (ramp.max() - ramp.min()) + ramp.min()
    interior = slice(6, 40)
    cubic_error = np.abs(profile[interior] - truth[interior]).max()
    linear = np.interp(grid, x, (x - 12) ** 2)
    linear_error = np.abs(linear[interior] - truth[interior]).max()
    assert cubic_error < 0.5 * linear_error


def test_paper_sizes_and_description(tmp_path):
    path = _write(tmp_path / "d.nii.gz", (30, 36, 30), 6.0)
    out = build_transforms({"spacing_mm": 1.5, "shape": [128, 160, 128]})({"image": path})["image"]
    assert tuple(out.shape) == (1, 128, 160, 128)
    assert "bilinear" in describe({"spacing_mm": 1.5, "shape": [128, 160, 128]})["resample"]
    assert "B-spline" in describe({"spacing_mm": 1.5, "interpolation": "bspline"})["resample"]
    with pytest.raises(ValueError):
        build_transforms({"spacing_mm": 1.5, "shape": [128, 160]})
    with pytest.raises(ValueError, match="images.interpolation"):
        build_transforms({"interpolation": "cubic"})


# ------------------------------------------------------------------ a real 1 mm -> 1.5 mm skull-stripped brain
RESOURCES = Path(ldae.__file__).parent / "resources"
PAPER = {"spacing_mm": 1.5, "shape": [128, 160, 128]}


@pytest.fixture(scope="module")
def mni_brain(tmp_path_factory):
    """The shipped MNI152 1 mm T1w x its brain mask (a skull-stripped brain on an exact-0 background), the mask
    taken through the same geometry (nearest neighbour) and the un-padded resampled shape."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ResizeWithPadOrCropd, Spacingd

    root = tmp_path_factory.mktemp("mni")
    head = nib.load(RESOURCES / "mni152nlin6asym_head_t1w_1mm_u7.nii.gz")
    mask = nib.load(RESOURCES / "mni152nlin6asym_brainmask_1mm.nii.gz").get_fdata() > 0.5
    brain = (head.get_fdata() * mask).astype(np.float32)
    nib.Nifti1Image(brain, head.affine).to_filename(root / "brain.nii.gz")
    nib.Nifti1Image(mask.astype(np.uint8), head.affine).to_filename(root / "mask.nii.gz")
    geometry = Compose(
        [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            Spacingd(keys="image", pixdim=(1.5,) * 3, mode="nearest"),
        ]
    )
    resampled = geometry({"image": str(root / "mask.nii.gz")})["image"]
    mask_out = ResizeWithPadOrCropd(keys="image", spatial_size=PAPER["shape"])({"image": resampled})["image"]
    brain_level = float(brain[ndimage.binary_erosion(mask, iterations=3)].mean() / brain.max())
    return {
        "path": str(root / "brain.nii.gz"),
        "mask": mask_out[0].numpy() > 0.5,
        "unpadded": tuple(resampled.shape[1:]),
        "brain_level": brain_level,
    }


@pytest.mark.parametrize("interpolation", ["bilinear", "bspline"])
def test_real_brain_background_is_exactly_zero(mni_brain, interpolation):
    """1 mm -> 1.5 mm: background exactly 0 after min-max, no step at the pad border, output in [0, 1], brain
    contrast not compressed (an unclipped cubic spline gave background ~0.15 and ~15 % less contrast)."""
    out = build_transforms({**PAPER, "interpolation": interpolation})({"image": mni_brain["path"]})["image"]
    assert tuple(out.shape) == (1, 128, 160, 128)
    out = out[0].numpy()
    assert out.min() == 0.0 and out.max() == 1.0
    mask = mni_brain["mask"]
    # background: farther than 12 mm (8 voxels) from the brain (the spline's overshoot halo is within ~1 cm)
    background = ~ndimage.binary_dilation(mask, iterations=8)
    assert background.mean() > 0.6
    assert np.count_nonzero(out[background]) == 0
    assert np.median(out[~mask]) == 0.0  # the most common non-brain value is 0, not a lifted floor
    # pad border: the padded slab and the first resampled slice agree wherever that slice is background
    for axis, (full, inner) in enumerate(zip(PAPER["shape"], mni_brain["unpadded"])):
        before = (full - inner) // 2
        if before < 1:
            continue
        pad = np.take(out, before - 1, axis=axis)
        first = np.take(out, before, axis=axis)
        first_bg = np.take(background, before, axis=axis)
        assert np.all(np.take(out, np.arange(before), axis=axis) == 0.0)
        assert np.abs(pad - first)[first_bg].max() == 0.0
    # brain contrast: the mean inner-brain level relative to the background matches the 1 mm image's
    inner = ndimage.binary_erosion(mask, iterations=2)
    assert out[inner].mean() / mni_brain["brain_level"] == pytest.approx(1.0, abs=0.03)


def test_bilinear_is_monai_spacing_default(mni_brain):
    """The default chain equals the authors' one: MONAI Spacingd with its default interpolation."""
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        ResizeWithPadOrCropd,
        ScaleIntensityd,
        Spacingd,
    )

    authors = Compose(
        [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            Spacingd(keys="image", pixdim=(1.5,) * 3),
            ResizeWithPadOrCropd(keys="image", spatial_size=PAPER["shape"], mode="minimum"),
            ScaleIntensityd(keys="image", minv=0.0, maxv=1.0),
        ]
    )
    ours = build_transforms(PAPER)({"image": mni_brain["path"]})["image"]
    theirs = authors({"image": mni_brain["path"]})["image"]
    assert torch.allclose(ours.as_tensor(), theirs.as_tensor().float(), atol=1e-6)


def test_clipped_spline_is_cached_by_monai(tmp_path):
    """The bspline step is a deterministic MONAI Transform: PersistentDataset caches up to the end of the chain."""
    from monai.transforms import RandomizableTrait, Transform

    chain = build_transforms({"spacing_mm": 1.5, "shape": [16, 16, 16], "interpolation": "bspline"})
    uncached = chain.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    assert uncached is None
