"""The MONAI inference-time transforms shared by every training/evaluation stage (ldae.data.transforms)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

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
    out = build_transforms({"spacing_mm": 0.5, "shape": [48, 48, 48]})({"image": str(path)})["image"][0].numpy()
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
    assert "B-spline" in describe({"spacing_mm": 1.5, "shape": [128, 160, 128]})["resample"]
    with pytest.raises(ValueError):
        build_transforms({"spacing_mm": 1.5, "shape": [128, 160]})
