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

    # or everything at once, with the paper's encode/decode operations:
    pipe = load_pipeline("output/models", device="cuda")
    y = pipe.semantic(image)                   # (B, 1, X, Y, Z) in [0, 1] -> (B, 768) y_sem
    z = pipe.latent(image)                     # scaled posterior-mean latent (what the diffusion models see)
    x_T = pipe.stochastic_encode(z, y, 100)    # deterministic DDIM inversion conditioned on y_sem
    rec = pipe.decode(x_T, y, 100)             # DDIM decoding -> AE decoder -> image in [0, 1]
    rec_from_noise = pipe.decode(torch.randn_like(z), y, 100)
    # DDIM settings (x0 clamp, grid): those train_ldae recorded (config section `ddim`), or pass ddim=DDIMSettings(...)
    ae_rec = pipe.to_image(z)                  # the AutoencoderKL reconstruction (the paper's reference)

Latent convention: the diffusion models work on ``scale * z`` (``scale`` from ``scale.json``);
:meth:`LDAEPipeline.to_image` divides by it before the AE decoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

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


@dataclass
class LDAEPipeline:
    """The trained chain with the paper's operations ("Using the trained model"). All methods run under no_grad."""

    autoencoder: nn.Module
    encoder: nn.Module | None
    estimator: nn.Module | None
    ldm: nn.Module | None
    schedule: Any
    scale_factor: float
    guidance: str = "score"
    ddim: Any = None  # ldae.diffusion.DDIMSettings; None: the defaults (the authors' clamp and grid)

    def __post_init__(self) -> None:
        from ldae.diffusion import DDIMSettings

        if self.ddim is None:
            self.ddim = DDIMSettings()
        elif not isinstance(self.ddim, DDIMSettings):
            self.ddim = DDIMSettings.from_config(self.ddim)

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @torch.no_grad()
    def latent(self, image: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Scaled latent ``scale * z_mu`` (or a posterior sample) of an image batch."""
        z_mu, z_sigma = self.autoencoder.encode(image.to(self.device))
        z = z_mu + z_sigma * torch.randn_like(z_sigma) if sample else z_mu
        return z * self.scale_factor

    @torch.no_grad()
    def to_image(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """AE decoder on a scaled latent -> image (not clamped)."""
        return self.autoencoder.decode(z_scaled.to(self.device) / self.scale_factor)

    @torch.no_grad()
    def semantic(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image.to(self.device))

    def eps_fn(self, y_sem: torch.Tensor | None):
        """eps function for DDIM: guided by ``y_sem`` (LDAE), or the unconditional LDM when ``y_sem`` is None."""
        from ldae.diffusion import guided_eps_fn

        if y_sem is None:
            unet = self.ldm if self.ldm is not None else self.estimator.ldm
            return lambda x, t: unet(x, timesteps=t)
        return guided_eps_fn(self.estimator, y_sem, self.schedule, self.guidance)

    @torch.no_grad()
    def stochastic_encode(self, z_scaled: torch.Tensor, y_sem: torch.Tensor | None, steps: int = 100) -> torch.Tensor:
        """Deterministic DDIM inversion ``scale * z -> x_T`` (conditioned on ``y_sem``; None: plain LDM)."""
        from ldae.diffusion import ddim_invert

        return ddim_invert(self.eps_fn(y_sem), z_scaled.to(self.device), self.schedule, steps, **self.ddim.kwargs())

    @torch.no_grad()
    def decode_latent(self, x_T: torch.Tensor, y_sem: torch.Tensor | None, steps: int = 100) -> torch.Tensor:
        from ldae.diffusion import ddim_sample

        return ddim_sample(self.eps_fn(y_sem), x_T.to(self.device), self.schedule, steps, **self.ddim.kwargs())

    @torch.no_grad()
    def decode(self, x_T: torch.Tensor, y_sem: torch.Tensor | None, steps: int = 100) -> torch.Tensor:
        """DDIM decoding (eta 0) of ``x_T`` guided by ``y_sem``, then the AE decoder -> image."""
        return self.to_image(self.decode_latent(x_T, y_sem, steps))


def load_pipeline(models_dir: str | os.PathLike, device: str | torch.device = "cpu",
                  with_ldae: bool = True, ddim=None) -> LDAEPipeline:
    """Everything under ``<out_dir>/models`` (autoencoder/, latents/, ldm/, ldae/) as an :class:`LDAEPipeline`.

    ``ddim`` (DDIMSettings or a ``ddim`` config section): None -> the settings train_ldae recorded in
    ``ldae/config.yaml`` (else the defaults)."""
    root = Path(models_dir)
    ae = load_autoencoder(root / "autoencoder" / "weights.pt", root / "autoencoder" / "config.yaml", device)
    ldm = load_ldm(root / "ldm" / "weights.pt", root / "ldm" / "config.yaml", device)
    encoder = estimator = None
    guidance = "score"
    if with_ldae:
        encoder, estimator = load_ldae(root / "ldae" / "weights.pt", root / "ldae" / "config.yaml",
                                       root / "ldm" / "weights.pt", device)
        guidance = stage_section(root / "ldae" / "config.yaml", "ldae")["guidance"]
        if ddim is None:
            ddim = read_config(root / "ldae" / "config.yaml").get("ddim")
    return LDAEPipeline(ae, encoder, estimator, ldm, load_schedule(root / "ldm" / "config.yaml"),
                        load_scale_factor(root / "latents"), guidance, ddim)


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
