"""2.5-D semantic encoder Enc(x0) -> y_sem (paper, stage 3; also used by the DAE and supervised baselines).

Every slice along ``slice_axis`` (axial for RAS volumes: the 3rd spatial axis, 128 slices at 128x160x128) goes
through a 2-D backbone (torchvision ConvNeXt-Small in the paper, 768-d, ImageNet-initialised with the first conv
made single-channel by summing its RGB filters) -> per-slice features e_i. Sinusoidal positional encoding over the
slice index is added (then dropout); soft attention pooling gives g = sum_i a_i e_i; multi-head cross-attention
(8 heads, dropout 0.1) with g as query and the slice sequence as keys/values, then LayerNorm, gives y_sem.

The default head is the authors' (their released ``encoder.pth`` loads into it, :mod:`ldae.models.official_encoder`):
raw [0, 1] input, PE dropout 0.1, scorer ONE Linear(F -> 1), separate Linear q/k/v projections before
``nn.MultiheadAttention``, y_sem = the LayerNorm output (so ``y_dim`` = the backbone's feature size F). The
alternatives (our first head) stay selectable: ``scorer: mlp`` (Linear-Tanh-Linear), ``qkv_proj: false``,
``out_proj: true`` (a Linear(F -> y_dim) after the LayerNorm), ``input_mean/std`` 0.449/0.226, ``pe_dropout: 0``.

ImageNet weights are read only from a LOCAL file (``weights_only=True``); absent -> random init + warning. Nothing
is ever downloaded (torchvision builders are called with ``weights=None``).

Config keys (``ldae.encoder``; defaults = the paper / the authors' code): backbone: "convnext_small" |
"convnext_tiny" | "tiny", tiny_dims: [16, 32, 64], tiny_depths: [1, 1, 1], pretrained_path: null, y_dim: null (the
backbone's feature size; with out_proj false an explicit value must equal it), slice_axis: 2, num_heads: 8,
attn_dropout: 0.1, chunk_size: 32, gradient_checkpointing: false, stochastic_depth: null (torchvision default),
input_mean: 0.0, input_std: 1.0 (raw [0, 1] intensities), pe_dropout: 0.1, scorer: "linear" | "mlp",
qkv_proj: true, out_proj: false.
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

from ldae.verbs import schema_defaults

__all__ = [
    "ENCODER_DEFAULTS",
    "SemanticEncoder",
    "build_semantic_encoder",
    "backbone_feature_dim",
    "resolve_y_dim",
    "resolve_encoder_config",
    "build_backbone",
    "rgb_to_single_channel_conv",
    "sinusoidal_positions",
]

ENCODER_DEFAULTS: dict[str, Any] = {  # the `ldae.encoder` section's defaults (the schema's); no file: None
    **schema_defaults("ldae.encoder"),
    "pretrained_path": None,
}
SCORERS = ("linear", "mlp")
_FEATURE_DIMS = {"convnext_small": 768, "convnext_tiny": 768}


def _merged(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**ENCODER_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in ENCODER_DEFAULTS}}


def backbone_feature_dim(cfg: Mapping[str, Any] | None = None) -> int:
    """Per-slice feature size F of the configured backbone, without building it (768 for ConvNeXt-Small/Tiny,
    the last of ``tiny_dims`` for the tiny one)."""
    c = _merged(cfg)
    name = str(c["backbone"])
    if name == "tiny":
        dims = list(c["tiny_dims"] or [])
        if not dims:
            raise ValueError("ldae.encoder.tiny_dims is empty: give the stage widths of the tiny backbone")
        return int(dims[-1])
    if name not in _FEATURE_DIMS:
        raise ValueError(f"unknown semantic-encoder backbone {name!r} (convnext_small, convnext_tiny, tiny)")
    return _FEATURE_DIMS[name]


def resolve_y_dim(cfg: Mapping[str, Any] | None = None, where: str = "ldae.encoder") -> int:
    """Size of y_sem. ``out_proj`` false (authors'): y_sem is the LayerNorm output, so y_dim IS the backbone's
    feature size (``y_dim`` null, or equal to it: anything else is an error naming the keys). ``out_proj`` true:
    ``y_dim`` (null: the feature size)."""
    c = _merged(cfg)
    feat = backbone_feature_dim(c)
    given = c["y_dim"]
    if given is None or given == "":
        return feat
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ValueError(f"{where}.y_dim must be a positive integer or null, got {given!r}")
    if not c["out_proj"] and int(given) != feat:
        tiny = f" (tiny_dims[-1] = {feat})" if c["backbone"] == "tiny" else ""
        raise ValueError(
            f"{where}.y_dim = {given} but {where}.out_proj is false: y_sem is then the LayerNorm output of the "
            f"{c['backbone']} features, of size {feat}{tiny}. Set {where}.y_dim: null (or {feat}), or "
            f"{where}.out_proj: true to add a Linear({feat} -> {given}) after the LayerNorm"
        )
    return int(given)


def resolve_encoder_config(cfg: Mapping[str, Any] | None = None, where: str = "ldae.encoder") -> dict[str, Any]:
    """The encoder config over the defaults with ``y_dim`` resolved to an integer (:func:`resolve_y_dim`)."""
    c = _merged(cfg)
    if str(c["scorer"]) not in SCORERS:
        raise ValueError(f"{where}.scorer must be one of {list(SCORERS)}, got {c['scorer']!r}")
    c["y_dim"] = resolve_y_dim(c, where)
    return c


def rgb_to_single_channel_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1-input-channel copy of ``conv`` whose filters are the sums of the RGB filters (same response to a grey
    image replicated over the three channels)."""
    new = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
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
    c = _merged(cfg)
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
        setting = [
            CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
            for i, (d, n) in enumerate(zip(dims, depths))
        ]
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
        warnings.warn(
            f"semantic-encoder backbone weights not found ({where}): RANDOM initialisation "
            "(the paper starts from ImageNet weights; nothing is downloaded)",
            stacklevel=2,
        )
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
    """``(B, 1, X, Y, Z)`` image in [0, 1] -> ``(B, y_dim)`` semantic code. See module docstring.

    Submodules (state-dict names): ``backbone``; ``pool_score`` (scorer: a Linear, or Linear-Tanh-Linear);
    ``q_proj``/``k_proj``/``v_proj`` (qkv_proj); ``cross_attn``; ``norm``; ``proj`` (out_proj; else Identity).
    """

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        c = resolve_encoder_config(cfg)
        self.backbone, self.feat_dim = build_backbone(c)
        f = self.feat_dim
        if f != backbone_feature_dim(c):
            raise RuntimeError(f"backbone {c['backbone']} gives {f} features, expected {backbone_feature_dim(c)}")
        if f % int(c["num_heads"]):
            raise ValueError(f"backbone feature size {f} not divisible by num_heads={c['num_heads']}")
        self.slice_axis = int(c["slice_axis"])
        if self.slice_axis not in (0, 1, 2):
            raise ValueError("slice_axis must be 0, 1 or 2 (a spatial axis of a 3-D volume)")
        self.chunk_size = max(1, int(c["chunk_size"]))
        self.gradient_checkpointing = bool(c["gradient_checkpointing"])
        self.input_mean, self.input_std = float(c["input_mean"]), float(c["input_std"])
        self.y_dim = int(c["y_dim"])
        self.pe_dropout = nn.Dropout(float(c["pe_dropout"]))
        self.pool_score = (
            nn.Linear(f, 1) if c["scorer"] == "linear" else nn.Sequential(nn.Linear(f, f), nn.Tanh(), nn.Linear(f, 1))
        )
        self.qkv_proj = bool(c["qkv_proj"])
        if self.qkv_proj:
            self.q_proj, self.k_proj, self.v_proj = nn.Linear(f, f), nn.Linear(f, f), nn.Linear(f, f)
        self.cross_attn = nn.MultiheadAttention(
            f, int(c["num_heads"]), dropout=float(c["attn_dropout"]), batch_first=True
        )
        self.norm = nn.LayerNorm(f)
        self.proj = nn.Linear(f, self.y_dim) if c["out_proj"] else nn.Identity()

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
        e = self.pe_dropout(e + sinusoidal_positions(e.shape[1], self.feat_dim, e.device, e.dtype)[None])
        a = torch.softmax(self.pool_score(e).squeeze(-1), dim=1)  # (B, S)
        g = torch.einsum("bs,bsf->bf", a, e)[:, None]  # (B, 1, F)
        q, k, v = (self.q_proj(g), self.k_proj(e), self.v_proj(e)) if self.qkv_proj else (g, e, e)
        h, attn = self.cross_attn(q, k, v, need_weights=return_attention)
        y = self.proj(self.norm(h[:, 0]))
        return (y, a, attn) if return_attention else y


def build_semantic_encoder(cfg: Mapping[str, Any] | None = None) -> SemanticEncoder:
    """:class:`SemanticEncoder` from the ``ldae.encoder`` config section."""
    return SemanticEncoder(cfg)
