"""MONAI inference-time transforms shared by every training and evaluation stage (paper, Data section).

A preprocessed image (template space, skull-stripped; path from the cohort QC table) ->
1. load the NIfTI, channel first;
2. resample to `images.spacing_mm` isotropic with `images.interpolation`:
   * ``bilinear`` (default; the authors' code: MONAI ``Spacingd``'s default, trilinear in 3-D): a convex
     combination of neighbours, so a background of 0 stays exactly 0;
   * ``bspline`` (the paper's wording): cubic B-spline (spline order 3), then CLIPPED to the input's intensity range.
     A cubic spline overshoots at edges (a skull-stripped brain on a 0 background gives negative lobes); without the
     clip the overshoot becomes the image minimum, and after min-max the background sits near 0.15 instead of 0.
     The spline's global prefilter also leaves ringing far below any meaningful level (< 1e-6 of the intensity range
     beyond ~1 cm from the brain): values within ``SNAP_TOLERANCE`` x range of the input minimum are set to it;
3. pad/crop to `images.shape` around the centre (ResizeWithPadOrCrop, padding mode 'minimum', as the authors'
   code: the pad value is the image minimum, i.e. background);
4. min-max intensities to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.transforms import MapTransform

KEY = "image"
INTERPOLATIONS = {"bilinear": "bilinear", "bspline": 3}
DEFAULT_INTERPOLATION = "bilinear"
SNAP_TOLERANCE = 1e-6


def _interpolation(images_cfg: Mapping) -> str:
    name = str(images_cfg.get("interpolation", DEFAULT_INTERPOLATION))
    if name not in INTERPOLATIONS:
        raise ValueError(
            f"images.interpolation: {name!r} is not one of {sorted(INTERPOLATIONS)} "
            "(bilinear: the authors' code; bspline: the paper's wording)"
        )
    return name


class ClippedSpacingd(MapTransform):
    """``Spacingd`` whose output is clipped to the input's [min, max] (values within ``snap`` x range of the
    minimum set to it): no spline overshoot beyond the input's intensity range. A MONAI ``Transform`` and not
    random, so Cache/PersistentDataset cache its output."""

    def __init__(self, keys: str, snap: float = SNAP_TOLERANCE, **spacing_kwargs) -> None:
        from monai.transforms import Spacingd

        super().__init__(keys)
        self.snap = float(snap)
        self.spacing = Spacingd(keys=keys, **spacing_kwargs)

    def __call__(self, data: Mapping) -> dict:
        ranges = {key: (float(data[key].min()), float(data[key].max())) for key in self.key_iterator(dict(data))}
        out = dict(self.spacing(data))
        for key, (low, high) in ranges.items():
            clipped = torch.clamp(out[key], low, high)  # MetaTensor in, MetaTensor out (affine kept)
            out[key] = torch.where(clipped - low <= self.snap * (high - low), torch.full_like(clipped, low), clipped)
        return out


def build_transforms(images_cfg: Mapping, key: str = KEY):
    """A MONAI Compose over a dict whose `key` ("image") holds a NIfTI path; returns a float32 tensor
    shaped (1, *images_cfg["shape"]) with values in [0, 1] (MetaTensor, affine kept)."""
    import numpy as np
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        ResizeWithPadOrCropd,
        ScaleIntensityd,
        Spacingd,
    )

    spacing = float(images_cfg.get("spacing_mm", 1.5))
    shape = [int(v) for v in images_cfg.get("shape", [128, 160, 128])]
    if len(shape) != 3 or spacing <= 0:
        raise ValueError(f"images: need spacing_mm > 0 and a 3-D shape, got {spacing}, {shape}")
    interpolation = _interpolation(images_cfg)
    # computed in float64 (MONAI Spacingd's default, as the authors' chain); float32 at the end
    resample = {
        "pixdim": (spacing,) * 3,
        "mode": INTERPOLATIONS[interpolation],
        "padding_mode": "border",
        "dtype": np.float64,
    }
    resample_step = (
        Spacingd(keys=key, **resample) if interpolation == "bilinear" else ClippedSpacingd(keys=key, **resample)
    )
    return Compose(
        [
            LoadImaged(keys=key, image_only=True, reader="NibabelReader"),
            EnsureChannelFirstd(keys=key),
            resample_step,
            ResizeWithPadOrCropd(keys=key, spatial_size=shape, mode="minimum"),
            ScaleIntensityd(keys=key, minv=0.0, maxv=1.0),
            EnsureTyped(keys=key, dtype=np.float32),
        ]
    )


def describe(images_cfg: Mapping) -> dict:
    """The transform chain in words (for run configs and model cards)."""
    interpolation = {
        "bilinear": "trilinear ('bilinear', MONAI Spacingd default; authors' code)",
        "bspline": "cubic B-spline (order 3; paper), clipped to the input's intensity range",
    }
    return {
        "load": "NIfTI, channel first",
        "resample": f"{float(images_cfg.get('spacing_mm', 1.5))} mm isotropic, "
        f"{interpolation[_interpolation(images_cfg)]}",
        "pad_crop": f"{list(images_cfg.get('shape', [128, 160, 128]))}, ResizeWithPadOrCrop mode 'minimum'",
        "intensity": "min-max to [0, 1]",
    }
