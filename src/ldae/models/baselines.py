"""Baselines of Tables 5-7: the voxel-space diffusion autoencoder (DAE, Preechakul et al. 2022 "DiffAE") and the
supervised encoder (same semantic encoder + one linear head, trained end-to-end on the label).

DAE: the same 2.5-D :class:`SemanticEncoder` produces ``y_sem``; a conditional image-space MONAI
``DiffusionModelUNet`` predicts epsilon, with ``y_sem`` entering every residual block through the same AdaGN
mechanism as the LDAE estimator: ``h = (1 + z_s) * (GN(h) * (1 + t_s) + t_b) + z_b``. Both are trained jointly with
the plain epsilon MSE (:func:`ldae.diffusion.pdae.eps_loss`); decoding/encoding uses :mod:`ldae.diffusion.ddim`
with ``eps_fn = lambda x, t: dae(x, t, y_sem)``. The authors published no DAE code: the sizes below are ours,
chosen to land near the paper's 130M parameters (Table 5) with the ConvNeXt-Small encoder.

Config keys (section ``dae``): spatial_dims: 3, in_channels: 1, channels: [32, 64, 128, 256, 256] ...
(see ``DAE_DEFAULTS``), y_dim: null (the encoder's), condition_encoder: true (condition the down path too, as DiffAE),
encoder: {...} (the ``ldae.encoder`` keys), resample_axes: "all" (isotropic down/upsampling of the image; the
LDM's default ``last_two`` is the authors' choice for their latent, not for this baseline).
Section ``supervised``: num_outputs: 1, encoder: {...}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ldae.verbs import schema_defaults

from .ldm_unet import convert_resnet_blocks, monai_unet, set_resample_axes, unet_decode, unet_encode
from .semantic_encoder import SemanticEncoder

__all__ = [
    "DAE_DEFAULTS",
    "VoxelDAE",
    "SupervisedEncoder",
    "build_dae",
    "build_supervised_encoder",
    "dae_for_config",
    "supervised_for_config",
]

DAE_DEFAULTS: dict[str, Any] = {  # what the stage fixes + the `dae.network` section's defaults (the schema's)
    "spatial_dims": 3,
    "in_channels": 1,
    **schema_defaults("dae.network"),
    "y_dim": None,
}


class VoxelDAE(nn.Module):
    """Semantic encoder + y-conditioned image-space U-Net. ``forward(x_t, t, y_sem) -> eps``."""

    def __init__(self, cfg: Mapping[str, Any] | None = None, encoder_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        c = {**DAE_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in DAE_DEFAULTS}}
        enc_cfg = dict(encoder_cfg if encoder_cfg is not None else (cfg or {}).get("encoder", {}) or {})
        if c["y_dim"] is not None:  # else the encoder's (resolved from its own config)
            enc_cfg["y_dim"] = int(c["y_dim"])
        self.encoder = SemanticEncoder(enc_cfg)
        self.y_dim = self.encoder.y_dim
        self.unet = monai_unet(c, int(c["in_channels"]))
        temb = self.unet.time_embed[-1].out_features
        mode, drop = str(c["time_conditioning"]), float(c["dropout"])
        convert_resnet_blocks(self.unet.down_blocks, mode, drop, temb if c["condition_encoder"] else None)
        convert_resnet_blocks(self.unet.middle_block, mode, drop, temb)
        convert_resnet_blocks(self.unet.up_blocks, mode, drop, temb)
        set_resample_axes(self.unet, str(c["resample_axes"]), int(c["spatial_dims"]))
        self.y_proj = nn.Linear(self.y_dim, temb)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """``y_sem`` of an image batch."""
        return self.encoder(x0)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y_sem: torch.Tensor) -> torch.Tensor:
        if y_sem.ndim != 2 or y_sem.shape != (x_t.shape[0], self.y_dim):
            raise ValueError(f"y_sem must be (B={x_t.shape[0]}, {self.y_dim}), got {tuple(y_sem.shape)}")
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        h, skips, emb = unet_encode(self.unet, x_t, t, cond_emb=self.y_proj(y_sem))
        return unet_decode(self.unet.middle_block, self.unet.up_blocks, self.unet.out, h, skips, emb)


class SupervisedEncoder(nn.Module):
    """Semantic encoder + ``Linear(y_dim -> num_outputs)`` (AD logit, or age). ``features(x)`` gives ``y``."""

    def __init__(self, cfg: Mapping[str, Any] | None = None, encoder_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        cfg = dict(cfg or {})
        enc_cfg = dict(encoder_cfg if encoder_cfg is not None else cfg.get("encoder", {}) or {})
        self.encoder = SemanticEncoder(enc_cfg)
        self.head = nn.Linear(self.encoder.y_dim, int(cfg.get("num_outputs", 1)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_dae(cfg: Mapping[str, Any] | None = None, encoder_cfg: Mapping[str, Any] | None = None) -> VoxelDAE:
    return VoxelDAE(cfg, encoder_cfg)


def build_supervised_encoder(
    cfg: Mapping[str, Any] | None = None, encoder_cfg: Mapping[str, Any] | None = None
) -> SupervisedEncoder:
    return SupervisedEncoder(cfg, encoder_cfg)


def _encoder_settings(encoder_cfg: Mapping[str, Any], pretrained: bool) -> dict[str, Any]:
    """The resolved encoder section; ``pretrained`` False: no ImageNet init (trained weights are loaded next)."""
    return {**encoder_cfg, "pretrained_path": (encoder_cfg.get("pretrained_path") or None) if pretrained else None}


def dae_for_config(section: Mapping[str, Any], encoder_cfg: Mapping[str, Any], pretrained: bool = True) -> VoxelDAE:
    """The DAE of a resolved ``dae`` section (its ``network``) and encoder section (y_dim: the encoder's)."""
    from .semantic_encoder import resolve_y_dim

    return build_dae(
        {**section["network"], "y_dim": resolve_y_dim(encoder_cfg)}, _encoder_settings(encoder_cfg, pretrained)
    )


def supervised_for_config(encoder_cfg: Mapping[str, Any], pretrained: bool = True) -> SupervisedEncoder:
    """The supervised baseline (encoder + one linear output) of a resolved encoder section."""
    return build_supervised_encoder({"num_outputs": 1}, _encoder_settings(encoder_cfg, pretrained))
