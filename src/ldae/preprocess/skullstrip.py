"""Skull stripping (brain extraction): `deepbet` | `template` | `antspynet`.

- deepbet: a CNN (Fisch et al. 2024) whose TorchScript weights ship inside its PyPI wheel (offline; CPU or
  GPU). Works in any space and orientation (it reorients internally).
- template: the template's brain mask, propagated through the registration (so registration must come first).
- antspynet: ANTsXNet's `brain_extraction(modality="t1")` (the authors' choice). It downloads weights on first
  use, which compute nodes cannot do, so it only runs from a pre-filled local cache
  (`preprocess.skullstrip.antspynet_cache`) and stops with a clear error otherwise. antspynet is not part of
  the default environment: it is imported only when chosen.
"""

from __future__ import annotations

import os

import numpy as np

METHODS = ("deepbet", "template", "antspynet")
_DEEPBET = {}


class SkullStripConfigError(RuntimeError):
    """The chosen method cannot run in this environment (missing package or weights): a setup error,
    not a property of one session, so the job fails instead of excluding the session."""


def ants_to_nib(image):
    import nibabel as nib

    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = flip @ np.asarray(image.direction) @ np.diag(image.spacing)
    affine[:3, 3] = flip @ np.asarray(image.origin)
    out = nib.Nifti1Image(image.numpy().astype(np.float32), affine)
    out.header.set_xyzt_units("mm")
    return out


def check_method(cfg: dict) -> None:
    """Fail early (before any work) when the configured method cannot run here."""
    method = cfg.get("method", "deepbet")
    if method not in METHODS:
        raise SkullStripConfigError(f"preprocess.skullstrip.method must be one of {METHODS}, not {method!r}")
    if method == "deepbet":
        _deepbet_weights()
    if method == "antspynet":
        _antspynet(cfg.get("antspynet_cache", ""))


def _deepbet_weights() -> tuple[str, str]:
    try:
        from deepbet.utils import DATA_PATH
    except ImportError as error:
        raise SkullStripConfigError(f"deepbet is not installed ({error}); pip install deepbet==1.0.2") from None
    model, bbox = f"{DATA_PATH}/models/model.pt", f"{DATA_PATH}/models/bbox_model.pt"
    missing = [p for p in (model, bbox) if not os.path.exists(p)]
    if missing:
        raise SkullStripConfigError(f"deepbet weights missing from its wheel: {missing}")
    return model, bbox


def _deepbet(device: str):
    key = device
    if key not in _DEEPBET:
        import warnings

        from deepbet.bet import BrainExtraction

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
            _DEEPBET[key] = BrainExtraction(no_gpu=(device == "cpu"))
    return _DEEPBET[key]


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def deepbet_mask(image, threshold: float = 0.5, dilate: int = 0, device: str = "auto"):
    """deepbet brain mask of an ANTs image, on its grid."""
    _deepbet_weights()
    bet = _deepbet(_resolve_device(device))
    _, mask, _ = bet.run(ants_to_nib(image), threshold=threshold, n_dilate=dilate)
    return image.new_image_like((np.asarray(mask.dataobj) > 0).astype("float32"))


def _antspynet(cache: str):
    """The antspynet module, configured to read weights from `cache` only."""
    if not cache:
        raise SkullStripConfigError(
            "skullstrip method 'antspynet' needs preprocess.skullstrip.antspynet_cache: a folder with the "
            "ANTsXNet weights downloaded beforehand (on a machine with network: "
            "python -c \"import antspynet; antspynet.brain_extraction(ants.image_read(ants.get_ants_data('r16')),"
            " modality='t1', antsxnet_cache_directory='<folder>')\")"
        )
    if not os.path.isdir(cache) or not any(os.scandir(cache)):
        raise SkullStripConfigError(
            f"preprocess.skullstrip.antspynet_cache {cache!r} is missing or empty: fill it with the ANTsXNet "
            "weights beforehand (compute nodes have no network)"
        )
    try:
        import antspynet  # noqa: F401 - optional, not in the default environment
    except ImportError as error:
        raise SkullStripConfigError(
            f"skullstrip method 'antspynet' needs the antspynet package, which is not installed ({error}). "
            "Install antspynet (and tensorflow) in the ants environment, or use method 'deepbet'."
        ) from None
    os.environ.setdefault("ANTSXNET_CACHE_DIRECTORY", cache)
    if hasattr(antspynet, "set_antsxnet_cache_directory"):
        antspynet.set_antsxnet_cache_directory(cache)
    return antspynet


def antspynet_mask(image, cache: str):
    import inspect

    antspynet = _antspynet(cache)
    kwargs = {"modality": "t1"}
    if "antsxnet_cache_directory" in inspect.signature(antspynet.brain_extraction).parameters:
        kwargs["antsxnet_cache_directory"] = cache
    probability = antspynet.brain_extraction(image, **kwargs)
    return image.new_image_like(_largest_component(probability.numpy() > 0.5).astype("float32"))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))


def brain_mask(image, cfg: dict, template_mask=None):
    """Brain mask (ANTs image 0/1 on `image`'s grid) and the parameters used.

    `template_mask` is the template's brain mask on `image`'s grid, known only once the image is in template
    space; method 'template' needs it."""
    method = cfg.get("method", "deepbet")
    params = {"method": method}
    if method == "deepbet":
        from importlib.metadata import version

        threshold, dilate = float(cfg.get("threshold", 0.5)), int(cfg.get("dilate", 0))
        device = _resolve_device(cfg.get("device", "auto"))
        mask = deepbet_mask(image, threshold, dilate, device)
        params.update(tool=f"deepbet {version('deepbet')}", threshold=threshold, dilate=dilate, device=device)
    elif method == "template":
        if template_mask is None:
            raise SkullStripConfigError(
                "skullstrip method 'template' propagates the template's brain mask through the registration: "
                "put 'register' before 'skullstrip' in preprocess.steps"
            )
        mask = template_mask
        params.update(tool="template brain mask through the registration")
    elif method == "antspynet":
        mask = antspynet_mask(image, cfg.get("antspynet_cache", ""))
        params.update(tool="antspynet brain_extraction (t1)", cache=cfg.get("antspynet_cache", ""))
    else:
        raise SkullStripConfigError(f"preprocess.skullstrip.method must be one of {METHODS}, not {method!r}")
    return mask, params
