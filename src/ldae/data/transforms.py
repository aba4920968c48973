"""MONAI inference-time transforms shared by every training and evaluation stage (paper, Data section).

A preprocessed image (template space, skull-stripped; path from the cohort QC table) ->
1. load the NIfTI, channel first;
2. resample to `images.spacing_mm` isotropic with cubic B-spline interpolation (spline order 3);
3. pad/crop to `images.shape` around the centre (ResizeWithPadOrCrop, padding mode 'minimum', as the authors'
   code: the pad value is the image minimum, i.e. background);
4. min-max intensities to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

KEY = "image"


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
    return Compose(
        [
            LoadImaged(keys=key, image_only=True, reader="NibabelReader"),
            EnsureChannelFirstd(keys=key),
            Spacingd(keys=key, pixdim=(spacing,) * 3, mode=3, padding_mode="border", dtype=np.float32),
            ResizeWithPadOrCropd(keys=key, spatial_size=shape, mode="minimum"),
            ScaleIntensityd(keys=key, minv=0.0, maxv=1.0),
            EnsureTyped(keys=key, dtype=np.float32),
        ]
    )


def describe(images_cfg: Mapping) -> dict:
    """The transform chain in words (for run configs and model cards)."""
    return {
        "load": "NIfTI, channel first",
        "resample": f"{float(images_cfg.get('spacing_mm', 1.5))} mm isotropic, cubic B-spline (order 3)",
        "pad_crop": f"{list(images_cfg.get('shape', [128, 160, 128]))}, ResizeWithPadOrCrop mode 'minimum'",
        "intensity": "min-max to [0, 1]",
    }
