"""Loading the trained models of the three stages (what evaluation, embedding and timing rules use).

Every training rule writes one folder with ``weights.pt`` (plain tensors, read with ``weights_only=True``) and
``config.yaml`` (the resolved config it was trained with)::

    models/autoencoder/{weights.pt, config.yaml, summary.json, metrics.csv}   rule train_autoencoder
    models/latents/{latents.npy, index.tsv, scale.json}                        rule encode_latents
    models/ldm/{weights.pt, config.yaml, summary.json, metrics.csv}           rule train_ldm (final EMA weights)
    models/ldae/{weights.pt, config.yaml, summary.json, metrics.csv}          rule train_ldae (best val SSIM)

``cfg`` arguments below accept the path of such a ``config.yaml`` or its loaded dict (``{"stage": ..., "config":
{...}}``); a bare stage section (``{"network": ...}``) works too. Missing or mismatching files are errors naming
the file, never a silently random network.

Quick reference::

    ae = load_autoencoder("models/autoencoder/weights.pt", "models/autoencoder/config.yaml")
    unet = load_ldm("models/ldm/weights.pt", "models/ldm/config.yaml")          # frozen, eval
    schedule = load_schedule("models/ldm/config.yaml")                          # T=1000 linear betas
    encoder, estimator = load_ldae("models/ldae/weights.pt", "models/ldae/config.yaml", "models/ldm/weights.pt")
    scale = load_scale_factor("models/latents")                                 # scale.json: 0.873 or 1/std (train)

    # or everything at once (ldae.models.pipelines.LDAEPipeline, the object every evaluation rule uses):
    pipe = load_pipeline("output/models", device="cuda")
    y = pipe.semantic(image)                   # (B, 1, X, Y, Z) in [0, 1] -> (B, 768) y_sem
    z = pipe.latent(image)                     # scaled posterior-mean latent (what the diffusion models see)
    x_T = pipe.invert(z, y, 100)               # deterministic DDIM inversion conditioned on y_sem
    rec = pipe.decode(pipe.sample(x_T, y, 100))  # DDIM decoding -> AE decoder -> image
    # DDIM settings (x0 clamp, grid): those train_ldae recorded (config section `ddim`), or pass ddim=DDIMSettings(...)
    ae_rec = pipe.decode(z)                    # the AutoencoderKL reconstruction (the paper's reference)

Latent convention: the diffusion models work on ``scale * z`` (``scale`` from ``scale.json``);
:meth:`LDAEPipeline.decode` divides by it before the AE decoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from ldae.diffusion import DDIMSettings

from .pipelines import LDAEPipeline

__all__ = [
    "read_config",
    "stage_section",
    "load_autoencoder",
    "load_ldm",
    "load_schedule",
    "load_ldae",
    "load_scale_factor",
    "ldae_state_dicts",
    "LDAEPipeline",
    "load_ldae_pipeline",
    "load_pipeline",
    "read_tensor_file",
    "load_official_encoder",
]


def read_config(cfg: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A stage's ``config.yaml`` (path) or an already loaded dict."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    path = Path(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path} (written next to the weights by the training rule)")
    return yaml.safe_load(path.read_text()) or {}


def stage_section(cfg: str | os.PathLike | Mapping[str, Any], stage: str | None = None) -> dict[str, Any]:
    """The resolved stage section inside a ``config.yaml`` (``cfg["config"]``), or ``cfg`` itself if bare."""
    data = read_config(cfg)
    if "config" in data and "stage" in data:
        if stage is not None and data["stage"] != stage:
            raise ValueError(f"config of stage {data['stage']!r} given where stage {stage!r} is expected")
        return dict(data["config"])
    return data


def _weights(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}; run the rule that trains them")
    return torch.load(path, map_location="cpu", weights_only=True)


def _strict_load(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    from .gradient_estimator import load_unet_state_dict

    load_unet_state_dict(model, dict(sd), source, "the config.yaml next to it")


def load_autoencoder(weights: str | os.PathLike, cfg, device: str | torch.device = "cpu"):
    """The trained stage-1 MONAI ``AutoencoderKL`` in eval mode (``requires_grad`` off).

    ``ae.encode(x) -> (z_mu, z_sigma)`` (use :func:`ldae.models.encode_mean` for the posterior mean), ``ae.decode(z)``.
    ``cfg``: ``models/autoencoder/config.yaml`` or its dict.
    """
    from .autoencoder import build_autoencoder

    ae = build_autoencoder(stage_section(cfg, "autoencoder")["network"])
    _strict_load(ae, _weights(weights, "autoencoder"), str(weights))
    return ae.requires_grad_(False).eval().to(device)


def _ldm_network(cfg) -> dict[str, Any]:
    data = read_config(cfg)
    if data.get("stage") == "ldae":
        return dict(data["ldm"]["network"])
    return dict(stage_section(data, "ldm")["network"])


def load_ldm(weights: str | os.PathLike, cfg, device: str | torch.device = "cpu"):
    """The trained stage-2 latent DDPM U-Net (final EMA weights), frozen, eval mode.

    ``unet(x_t, timesteps=t) -> eps``, on scaled latents. ``cfg``: ``models/ldm/config.yaml`` (or the LDAE's, which
    copies the LDM architecture). A missing file or an architecture mismatch raises.
    """
    from .ldm_unet import build_ldm_unet

    unet = build_ldm_unet(_ldm_network(cfg))
    _strict_load(unet, _weights(weights, "stage-2 LDM"), str(weights))
    return unet.requires_grad_(False).eval().to(device)


def load_schedule(cfg):
    """The :class:`~ldae.diffusion.DiffusionSchedule` the LDM was trained with (from the LDM or LDAE config)."""
    from ldae.diffusion import DiffusionSchedule

    data = read_config(cfg)
    diffusion = data["ldm"]["diffusion"] if data.get("stage") == "ldae" else stage_section(data, "ldm")["diffusion"]
    return DiffusionSchedule.from_config(diffusion)


def load_scale_factor(latents_dir: str | os.PathLike) -> float:
    """The latent scale factor (1 / std over the training latents) written by rule encode_latents."""
    path = Path(latents_dir) / "scale.json"
    if not path.is_file():
        raise FileNotFoundError(f"latent scale factor not found: {path}; run rule encode_latents")
    return float(json.loads(path.read_text())["scale_factor"])


def ldae_state_dicts(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an LDAE ``weights.pt`` into (semantic encoder, estimator without the frozen LDM) state dicts."""
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    est = {k[len("estimator."):]: v for k, v in sd.items() if k.startswith("estimator.")}
    if not enc or not est:
        raise ValueError("not an LDAE weights file: expected keys under 'encoder.' and 'estimator.'")
    return enc, est


def load_ldae(weights: str | os.PathLike, cfg, ldm_weights: str | os.PathLike,
              device: str | torch.device = "cpu"):
    """``(encoder, estimator)`` of the trained LDAE, eval mode, gradients off.

    * ``encoder(image) -> y_sem`` (B, 768): the 2.5-D semantic encoder on the IMAGE (B, 1, X, Y, Z) in [0, 1];
    * ``estimator(x_t, t, y_sem, return_eps=True) -> (G, eps_hat)``: frozen LDM + trained decoder branch, on scaled
      latents; ``ldae.diffusion.guided_eps_fn(estimator, y_sem, schedule, cfg guidance)`` gives the eps function
      for ``ddim_sample`` / ``ddim_invert``.

    ``weights``: ``models/ldae/weights.pt`` (encoder + branch; the frozen LDM is not stored twice),
    ``cfg``: ``models/ldae/config.yaml``, ``ldm_weights``: ``models/ldm/weights.pt`` (hard error if absent or not
    the architecture recorded in the LDAE config).
    """
    from .gradient_estimator import GradientEstimator, load_frozen_unet
    from .semantic_encoder import build_semantic_encoder

    data = read_config(cfg)
    section = stage_section(data, "ldae")
    enc_sd, est_sd = ldae_state_dicts(_weights(weights, "LDAE"))
    enc_cfg = {**section["encoder"], "pretrained_path": None}  # the trained weights replace any ImageNet init
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone weights.*not found.*")
        encoder = build_semantic_encoder(enc_cfg)
    _strict_load(encoder, enc_sd, str(weights))
    unet = load_frozen_unet(_ldm_network(data), ldm_weights)
    est_cfg = section["estimator"]
    estimator = GradientEstimator(unet, y_dim=encoder.y_dim,
                                  share_middle_block=bool(est_cfg["share_middle_block"]),
                                  init_branch_from_ldm=False, dropout=est_cfg["dropout"])
    own = {k: v for k, v in estimator.state_dict().items() if not k.startswith("ldm.")}
    missing = sorted(set(own) - set(est_sd))
    unexpected = sorted(set(est_sd) - set(own))
    bad = sorted(k for k in set(own) & set(est_sd) if own[k].shape != est_sd[k].shape)
    if missing or unexpected or bad:
        raise ValueError(f"LDAE weights {weights} do not match the estimator of its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {bad[:5]}")
    estimator.load_state_dict(est_sd, strict=False)
    encoder.requires_grad_(False).eval().to(device)
    estimator.requires_grad_(False).eval().to(device)
    return encoder, estimator


def load_ldae_pipeline(autoencoder: str | os.PathLike, latents: str | os.PathLike, ldm: str | os.PathLike,
                       ldae: str | os.PathLike, device: str | torch.device = "cpu", ddim=None) -> LDAEPipeline:
    """The LDAE chain from its four model folders as the ONE :class:`ldae.models.pipelines.LDAEPipeline` every
    evaluation rule uses. ``ddim`` (DDIMSettings or a ``ddim`` config section): None -> the settings train_ldae
    (or import-official) recorded in ``ldae/config.yaml``, else the defaults (the authors' clamp and grid)."""
    ae = load_autoencoder(Path(autoencoder) / "weights.pt", Path(autoencoder) / "config.yaml", device)
    encoder, estimator = load_ldae(Path(ldae) / "weights.pt", Path(ldae) / "config.yaml", Path(ldm) / "weights.pt",
                                   device)
    ldae_config = read_config(Path(ldae) / "config.yaml")
    if ddim is None:
        ddim = ldae_config.get("ddim")
    return LDAEPipeline(ae, estimator, encoder, load_schedule(Path(ldm) / "config.yaml"),
                        load_scale_factor(latents), stage_section(ldae_config, "ldae").get("guidance", "score"),
                        ddim if isinstance(ddim, DDIMSettings) else DDIMSettings.from_config(ddim))


def load_pipeline(models_dir: str | os.PathLike, device: str | torch.device = "cpu", ddim=None) -> LDAEPipeline:
    """Everything under ``<out_dir>/models`` (autoencoder/, latents/, ldm/, ldae/): :func:`load_ldae_pipeline`."""
    root = Path(models_dir)
    return load_ldae_pipeline(root / "autoencoder", root / "latents", root / "ldm", root / "ldae", device, ddim)


# ------------------------------------------------------------------------------ the authors' released weights
def read_tensor_file(path: str | os.PathLike, what: str) -> Any:
    """A ``torch.save`` file read with ``weights_only=True``; errors name the file and ``what`` it should be."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(f"cannot read {what} from {path} with weights_only=True: {error}. Save only tensors "
                         "(e.g. its state_dict) with torch.save and retry") from error


def load_official_encoder(path: str | os.PathLike, cfg: Mapping[str, Any] | None = None,
                          device: str | torch.device = "cpu"):
    """Our semantic encoder (eval mode, gradients off) holding the authors' released ``encoder.pth``.

    ``cfg``: ``ldae.encoder`` settings over the defaults, which ARE the authors' head (ConvNeXt-Small,
    raw [0, 1] input, linear scorer, q/k/v projections, y_sem = LayerNorm output). The mapping is strict
    (:func:`ldae.models.official_encoder.encoder_from_official`).
    """
    import warnings

    from .official_encoder import encoder_from_official
    from .semantic_encoder import build_semantic_encoder

    official = read_tensor_file(path, "the authors' semantic encoder (encoder.pth)")
    if not isinstance(official, Mapping):
        raise ValueError(f"{path}: expected a state dict (key -> tensor), got {type(official).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone weights.*not found.*")
        encoder = build_semantic_encoder({**(cfg or {}), "pretrained_path": None})
    encoder.load_state_dict(encoder_from_official(official, encoder.state_dict(), str(path)), strict=True)
    return encoder.requires_grad_(False).eval().to(device)
