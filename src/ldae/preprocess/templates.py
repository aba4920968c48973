"""The registration template and its brain mask, and the BIDS `space-` label that follows from them.

Default: the MNI152 2009a nonlinear symmetric template (skull-stripped, 1 mm) that nilearn ships inside its
wheel (works offline), brain mask = template > 0.2 x max with holes filled (nilearn's own definition). Any
other template is a path in config `preprocess.registration.template` (+ `template_mask`); its space label is
config `space`, or the `tpl-<label>` entity of its file name (TemplateFlow naming).

This module is imported by the Snakefile at parse time: nothing heavy at import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_SPACE = "MNI152NLin2009aSym"
_TPL = re.compile(r"(?:^|_)tpl-([A-Za-z0-9]+)")


class TemplateError(ValueError):
    """A template setting that cannot work (missing file, no space label)."""


def space_label(registration: dict) -> str:
    """The BIDS `space-` label of the outputs for a `preprocess.registration` config section."""
    explicit = (registration.get("space") or "").strip()
    if explicit:
        if not re.fullmatch(r"[A-Za-z0-9]+", explicit):
            raise TemplateError(f"preprocess.registration.space {explicit!r} must be alphanumeric (a BIDS label)")
        return explicit
    template = (registration.get("template") or "").strip()
    if not template:
        return DEFAULT_SPACE
    match = _TPL.search(Path(template).name)
    if match:
        return match.group(1)
    raise TemplateError(
        f"cannot tell the space label of template {template!r}: set preprocess.registration.space "
        "(e.g. MNI152NLin2009cAsym) or name the file tpl-<label>_...nii.gz"
    )


def default_template_paths() -> tuple[str, str | None]:
    """nilearn's shipped MNI152 2009a symmetric T1 (brain); the mask is derived (None here)."""
    from nilearn.datasets.struct import MNI152_FILE_PATH

    return str(MNI152_FILE_PATH), None


# Where the default template comes from (nilearn ships this file, mni_icbm152_t1_tal_nlin_sym_09a)
DEFAULT_TEMPLATE_URI = "https://www.bic.mni.mcgill.ca/~vfonov/icbm/2009/mni_icbm152_nlin_sym_09a_nifti.zip"


def reference_uri(registration: dict) -> str:
    """BIDS SpatialReference of the outputs: the template's source (a URI, as the schema requires)."""
    if not registration.get("template"):
        return DEFAULT_TEMPLATE_URI
    return Path(os.path.abspath(registration["template"])).as_uri()


def template_paths(registration: dict) -> tuple[str, str | None]:
    template = (registration.get("template") or "").strip()
    mask = (registration.get("template_mask") or "").strip() or None
    if not template:
        path, derived = default_template_paths()
        return path, mask or derived
    if not os.path.exists(template):
        raise TemplateError(f"preprocess.registration.template {template!r} does not exist")
    if mask and not os.path.exists(mask):
        raise TemplateError(f"preprocess.registration.template_mask {mask!r} does not exist")
    return template, mask


def load_template(registration: dict, voxel_mm: float | None = None):
    """(template, brain mask) as ANTs images on the output grid (template grid resampled to `voxel_mm`).

    Intensities are scaled to [0, 1]. Without a mask file, the mask is template > 0.2 with holes filled
    (a skull-stripped template) — give `template_mask` for a template with skull."""
    import ants
    import numpy as np
    from scipy import ndimage

    path, mask_path = template_paths(registration)
    template = ants.image_read(path, pixeltype="float")
    if template.dimension != 3:
        raise TemplateError(f"template {path} is not a 3-D image")
    array = template.numpy()
    template = template.new_image_like(array / float(np.max(array)))
    if mask_path:
        mask = ants.image_read(mask_path, pixeltype="float")
        mask = ants.resample_image_to_target(mask, template, interp_type="nearestNeighbor")
        mask = template.new_image_like((mask.numpy() > 0.5).astype("float32"))
    else:
        filled = ndimage.binary_fill_holes(template.numpy() > 0.2)
        mask = template.new_image_like(filled.astype("float32"))
    if voxel_mm and any(abs(s - voxel_mm) > 1e-3 for s in template.spacing):
        template = ants.resample_image(template, (voxel_mm,) * 3, use_voxels=False, interp_type=0)
        mask = ants.resample_image_to_target(mask, template, interp_type="linear")
        mask = template.new_image_like((mask.numpy() > 0.5).astype("float32"))
    return template, mask
