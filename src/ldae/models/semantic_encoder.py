"""2.5-D semantic encoder Enc(x0) -> y_sem (paper, stage 3; also used by the DAE and supervised baselines).

Every slice along ``slice_axis`` (axial for RAS volumes: the 3rd spatial axis, 128 slices at 128x160x128) goes
through a 2-D backbone (torchvision ConvNeXt-Small in the paper, 768-d, ImageNet-initialised with the first conv
made single-channel by summing its RGB filters) -> per-slice features e_i. Sinusoidal positional encoding over the
slice index is added; soft attention pooling gives g = sum_i a_i e_i; multi-head cross-attention (8 heads, dropout
0.1) with g as query and the slice sequence as keys/values, LayerNorm, and a linear projection give y_sem.

ImageNet weights are read only from a LOCAL file (``weights_only=True``); absent -> random init + warning. Nothing
is ever downloaded (torchvision builders are called with ``weights=None``).

Config keys (``ldae.encoder``; defaults = the paper): backbone: "convnext_small" | "convnext_tiny" | "tiny",
tiny_dims: [16, 32, 64], tiny_depths: [1, 1, 1], pretrained_path: null, y_dim: 768, slice_axis: 2, num_heads: 8,
attn_dropout: 0.1, chunk_size: 32, gradient_checkpointing: false, stochastic_depth: null (torchvision default),
input_mean: 0.449, input_std: 0.226 (ImageNet grey statistics applied to [0, 1] intensities).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

__all__ = [
    "ENCODER_DEFAULTS",
    "SemanticEncoder",
    "build_semantic_encoder",
    "build_backbone",
    "rgb_to_single_channel_conv",
    "sinusoidal_positions",
]

ENCODER_DEFAULTS: dict[str, Any] = {
    "backbone": "convnext_small",
    "tiny_dims": [16, 32, 64],
    "tiny_depths": [1, 1, 1],
    "pretrained_path": None,
    "y_dim": 768,
    "slice_axis": 2,
    "num_heads": 8,
    "attn_dropout": 0.1,
    "chunk_size": 32,
    "gradient_checkpointing": False,
    "stochastic_depth": None,
    "input_mean": 0.449,
    "input_std": 0.226,
}


def rgb_to_single_channel_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1-input-channel copy of ``conv`` whose filters are the sums of the RGB filters (same response to a grey
    image replicated over the three channels)."""
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _load_backbone_weights(model: ConvNeXt, path: str) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read backbone weights from {path!r}: {e}") from e
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    sd = {k: v for k, v in dict(sd).items() if not k.startswith("classifier.2.")}  # ImageNet head: unused
    stem = sd.get("features.0.0.weight")
    own = model.state_dict()
    if stem is not None and stem.shape[1] == 3 and own["features.0.0.weight"].shape[1] == 1:
        sd["features.0.0.weight"] = stem.sum(dim=1, keepdim=True)
    res = model.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if not k.startswith("classifier.2.")]
    if missing or res.unexpected_keys:
        raise ValueError(
            f"backbone weights {path!r} do not match the configured backbone: missing {missing[:5]}, "
            f"unexpected {res.unexpected_keys[:5]}"
        )


def build_backbone(cfg: Mapping[str, Any] | None = None) -> tuple[nn.Module, int]:
    """Single-channel 2-D ConvNeXt feature extractor ``(N, 1, H, W) -> (N, F)`` and its feature size ``F``."""
    c = {**ENCODER_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in ENCODER_DEFAULTS}}
    name = str(c["backbone"])
    kw: dict[str, Any] = {}
    if c["stochastic_depth"] is not None:
        kw["stochastic_depth_prob"] = float(c["stochastic_depth"])
    if name == "convnext_small":
        model = torchvision.models.convnext_small(weights=None, **kw)
    elif name == "convnext_tiny":
        model = torchvision.models.convnext_tiny(weights=None, **kw)
    elif name == "tiny":
        dims, depths = [int(d) for d in c["tiny_dims"]], [int(d) for d in c["tiny_depths"]]
        if len(dims) != len(depths) or not dims or sum(depths) < 2:
            raise ValueError("tiny_dims and tiny_depths must have the same length and at least 2 blocks in all")
        setting = [CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
                   for i, (d, n) in enumerate(zip(dims, depths))]
        model = ConvNeXt(setting, stochastic_depth_prob=float(c["stochastic_depth"] or 0.0))
    else:
        raise ValueError(f"unknown semantic-encoder backbone {name!r} (convnext_small, convnext_tiny, tiny)")
    feat_dim = model.classifier[-1].in_features
    path = c["pretrained_path"]
    has_weights = path is not None and str(path).strip() != "" and os.path.isfile(os.fspath(path))
    if has_weights:
        _load_backbone_weights(model, os.fspath(path))  # 3-channel stem: summed below
    elif path or name != "tiny":
        where = "config ldae.encoder.pretrained_path is empty" if not path else f"no file {path}"
        warnings.warn(f"semantic-encoder backbone weights not found ({where}): RANDOM initialisation "
                      "(the paper starts from ImageNet weights; nothing is downloaded)", stacklevel=2)
    model.features[0][0] = rgb_to_single_channel_conv(model.features[0][0])
    model.classifier[-1] = nn.Identity()  # keep LayerNorm2d + Flatten: (N, F)
    return model, feat_dim


def sinusoidal_positions(n: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Transformer sinusoidal encoding, ``(n, dim)``."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    div = torch.exp(-math.log(10000.0) * i / dim)
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.to(dtype)


class SemanticEncoder(nn.Module):
    """``(B, 1, X, Y, Z)`` image in [0, 1] -> ``(B, y_dim)`` semantic code. See module docstring."""

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        c = {**ENCODER_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in ENCODER_DEFAULTS}}
        self.backbone, self.feat_dim = build_backbone(c)
        f = self.feat_dim
        if f % int(c["num_heads"]):
            raise ValueError(f"backbone feature size {f} not divisible by num_heads={c['num_heads']}")
        self.slice_axis = int(c["slice_axis"])
        if self.slice_axis not in (0, 1, 2):
            raise ValueError("slice_axis must be 0, 1 or 2 (a spatial axis of a 3-D volume)")
        self.chunk_size = max(1, int(c["chunk_size"]))
        self.gradient_checkpointing = bool(c["gradient_checkpointing"])
        self.input_mean, self.input_std = float(c["input_mean"]), float(c["input_std"])
        self.y_dim = int(c["y_dim"])
        self.pool_score = nn.Sequential(nn.Linear(f, f), nn.Tanh(), nn.Linear(f, 1))
        self.cross_attn = nn.MultiheadAttention(f, int(c["num_heads"]), dropout=float(c["attn_dropout"]),
                                                batch_first=True)
        self.norm = nn.LayerNorm(f)
        self.proj = nn.Linear(f, self.y_dim)

    def slice_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-slice backbone features ``(B, S, F)``; slices are processed ``chunk_size`` at a time."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, X, Y, Z) volume, got {tuple(x.shape)}")
        b = x.shape[0]
        s = x.movedim(2 + self.slice_axis, 1)  # (B, S, 1, H, W)
        n = s.shape[1]
        s = s.reshape(b * n, 1, *s.shape[-2:])
        s = (s - self.input_mean) / self.input_std
        feats = []
        for chunk in s.split(self.chunk_size):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                feats.append(torch.utils.checkpoint.checkpoint(self.backbone, chunk, use_reentrant=False))
            else:
                feats.append(self.backbone(chunk))
        return torch.cat(feats).reshape(b, n, self.feat_dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        e = self.slice_features(x)
        e = e + sinusoidal_positions(e.shape[1], self.feat_dim, e.device, e.dtype)[None]
        a = torch.softmax(self.pool_score(e).squeeze(-1), dim=1)  # (B, S)
        g = torch.einsum("bs,bsf->bf", a, e)[:, None]  # (B, 1, F)
        h, attn = self.cross_attn(g, e, e, need_weights=return_attention)
        y = self.proj(self.norm(h[:, 0]))
        return (y, a, attn) if return_attention else y


def build_semantic_encoder(cfg: Mapping[str, Any] | None = None) -> SemanticEncoder:
    """:class:`SemanticEncoder` from the ``ldae.encoder`` config section."""
    return SemanticEncoder(cfg)
