"""Stage-2 latent diffusion U-Net (MONAI ``DiffusionModelUNet``) and the AdaGN residual block shared by stage 3.

MONAI's :class:`~monai.networks.nets.diffusion_model_unet.DiffusionUNetResnetBlock` adds the time embedding to the
features (``h + temb`` before the second GroupNorm) and has no dropout. The paper's LDM (authors' code) uses
AdaGN residual blocks (scale-shift norm, ``GN(h) * (1 + t_s) + t_b``) with dropout 0.1, and the LDAE gradient
estimator additionally needs a second AdaGN modulation by the semantic code ``y``. :class:`AdaGNResnetBlock` provides
all three on top of the MONAI block: :func:`convert_resnet_blocks` swaps it in for every MONAI residual block of a
built network *reusing the MONAI sub-modules* (norms, convolutions, skip, up/down samplers keep their names and
state-dict keys). The rest of the network (down/mid/up blocks, attention, time embedding, ``forward``) stays MONAI's.

Extra conditioning travels through MONAI's block ``forward`` untouched: the blocks only hand ``temb`` on to their
residual blocks, so we pass ``torch.cat([t_emb, y_emb], 1)`` and :class:`AdaGNResnetBlock` splits it.

Down/upsampling: the authors pool and upsample only the LAST TWO spatial axes (average pooling with kernel = stride
(1, 2, 2), nearest x2 on the last two axes): latent 16x20x16 -> 16x10x8 -> 16x5x4. MONAI's samplers are isotropic
(-> 8x10x8 -> 4x5x4). :func:`set_resample_axes` swaps the MONAI samplers of a built network (also those inside the
residual blocks used for resampling) for ones acting on the chosen axes; parameters and state-dict keys are unchanged.
The attention output projections are zero-initialised (authors' init), like MONAI's ``conv2`` and output conv.

Config keys (section ``ldm.network``; defaults = the paper, Table 3 + authors' code):
    latent_channels: 3, channels: [256, 512, 768], num_res_blocks: 2, attention_levels: [false, true, true],
    num_heads: 1 (num_head_channels = channels // num_heads), norm_num_groups: 32, norm_eps: 1.0e-5,
    dropout: 0.1, time_conditioning: "scale_shift" (AdaGN) | "additive" (plain MONAI), resblock_updown: true,
    resample_axes: "last_two" (authors) | "all" (MONAI, isotropic), use_flash_attention: false, spatial_dims: 3.

``resblock_updown: true`` + ``scale_shift`` gives 486,927,363 parameters for the paper configuration, the paper's
"LDDIM @486M" (guided-diffusion style U-Net of the authors' code, layer for layer); the plain MONAI variants give
441-475M.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.layers.factories import Pool
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import (
    DiffusionUnetDownsample,
    DiffusionUNetResnetBlock,
    WrappedUpsample,
    get_timestep_embedding,
)

from ldae.verbs import schema_defaults

__all__ = [
    "LDM_DEFAULTS",
    "AdaGNResnetBlock",
    "convert_resnet_blocks",
    "RESAMPLE_AXES",
    "resample_factors",
    "set_resample_axes",
    "zero_attention_out_proj",
    "build_ldm_unet",
    "count_parameters",
    "unet_time_embedding",
    "unet_encode",
    "unet_decode",
    "zero_module",
]

LDM_DEFAULTS: dict[str, Any] = {  # what the stage fixes + the `ldm.network` section's defaults (the schema's)
    "spatial_dims": 3,
    "latent_channels": 3,
    **schema_defaults("ldm.network"),
}

_TIME_MODES = ("scale_shift", "additive")
RESAMPLE_AXES = ("last_two", "all")


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it."""
    for p in module.parameters():
        with torch.no_grad():
            p.zero_()
    return module


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


class AdaGNResnetBlock(nn.Module):
    """MONAI ``DiffusionUNetResnetBlock`` with AdaGN time conditioning, dropout and an optional second AdaGN input.

    ``h = GN(conv1(act(GN(x))))``; time: ``h = h * (1 + t_s) + t_b`` (``scale_shift``) or ``GN(h + t)``
    (``additive``, MONAI's original); condition (if ``cond_channels``): ``h = (1 + z_s) * h + z_b`` — together
    ``(1 + z_s) * (GN(h) * (1 + t_s) + t_b) + z_b`` as in PDAE/LDAE; then ``conv2(dropout(act(h)))`` + skip.

    Args:
        src: the MONAI block whose sub-modules are reused (norm1, conv1, up/downsample, norm2, conv2, skip).
        time_conditioning: ``"scale_shift"`` or ``"additive"``. ``scale_shift`` needs a 2*C time projection: the
            source's projection is reused if it already has that size, otherwise a new one is made.
        dropout: dropout probability before ``conv2``.
        cond_channels: size of the extra conditioning embedding (appended after the time embedding in ``emb``);
            ``None`` for no extra conditioning.
    """

    def __init__(
        self,
        src: DiffusionUNetResnetBlock,
        time_conditioning: str = "scale_shift",
        dropout: float = 0.0,
        cond_channels: int | None = None,
    ) -> None:
        super().__init__()
        if time_conditioning not in _TIME_MODES:
            raise ValueError(f"time_conditioning must be one of {_TIME_MODES}, got {time_conditioning!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.spatial_dims = src.spatial_dims
        self.channels = src.channels
        self.emb_channels = src.emb_channels
        self.out_channels = src.out_channels
        self.up, self.down = src.up, src.down
        self.time_conditioning = time_conditioning
        self.cond_channels = cond_channels

        self.norm1 = src.norm1
        self.nonlinearity = src.nonlinearity
        self.conv1 = src.conv1
        self.upsample = src.upsample
        self.downsample = src.downsample
        n_t = 2 * self.out_channels if time_conditioning == "scale_shift" else self.out_channels
        if src.time_emb_proj.out_features == n_t:
            self.time_emb_proj = src.time_emb_proj
        else:
            self.time_emb_proj = nn.Linear(self.emb_channels, n_t)
        self.norm2 = src.norm2
        self.dropout = nn.Dropout(dropout)
        self.conv2 = src.conv2
        self.skip_connection = src.skip_connection
        self.cond_emb_proj = nn.Linear(cond_channels, 2 * self.out_channels) if cond_channels else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t_emb = emb[:, : self.emb_channels]
        h = self.nonlinearity(self.norm1(x))
        if self.upsample is not None:
            x = self.upsample(x)
            h = self.upsample(h)
        elif self.downsample is not None:
            x = self.downsample(x)
            h = self.downsample(h)
        h = self.conv1(h)

        t = _expand(self.time_emb_proj(self.nonlinearity(t_emb)), h.ndim)
        if self.time_conditioning == "scale_shift":
            t_s, t_b = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + t_s) + t_b
        else:
            h = self.norm2(h + t)

        if self.cond_emb_proj is not None:
            c_emb = emb[:, self.emb_channels :]
            if c_emb.shape[1] != self.cond_channels:
                raise ValueError(
                    f"AdaGNResnetBlock expects emb of width {self.emb_channels} + {self.cond_channels} "
                    f"(time + condition), got {emb.shape[1]}"
                )
            z_s, z_b = _expand(self.cond_emb_proj(self.nonlinearity(c_emb)), h.ndim).chunk(2, dim=1)
            h = (1 + z_s) * h + z_b

        h = self.conv2(self.dropout(self.nonlinearity(h)))
        return self.skip_connection(x) + h


def convert_resnet_blocks(
    module: nn.Module,
    time_conditioning: str = "scale_shift",
    dropout: float = 0.0,
    cond_channels: int | None = None,
) -> nn.Module:
    """Replace, in place, every MONAI ``DiffusionUNetResnetBlock`` (or already converted block) inside ``module``.

    Already converted :class:`AdaGNResnetBlock` children are rebuilt from their sub-modules (so a frozen branch can
    be re-purposed with a different conditioning). Returns ``module``.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, (DiffusionUNetResnetBlock, AdaGNResnetBlock)):
            setattr(module, name, AdaGNResnetBlock(child, time_conditioning, dropout, cond_channels))  # type: ignore[arg-type]
        else:
            convert_resnet_blocks(child, time_conditioning, dropout, cond_channels)
    return module


def resample_factors(spatial_dims: int, resample_axes: str) -> tuple[int, ...]:
    """Per-axis down/upsampling factors: 2 on every axis (``all``) or on the last two only (``last_two``)."""
    if resample_axes not in RESAMPLE_AXES:
        raise ValueError(f"resample_axes must be one of {RESAMPLE_AXES}, got {resample_axes!r}")
    first = spatial_dims - 2 if resample_axes == "last_two" else 0
    return tuple(1 if axis < first else 2 for axis in range(spatial_dims))


def set_resample_axes(module: nn.Module, resample_axes: str, spatial_dims: int = 3) -> nn.Module:
    """Make every MONAI down/upsampler inside ``module`` act on ``resample_axes``; in place, returns ``module``.

    Average-pooling downsamplers get ``AvgPool(kernel = stride = factors)``, convolutional ones (``resblock_updown:
    false``) the stride ``factors``; nearest upsamplers get ``scale_factor = factors`` (their ``post_conv`` is kept).
    Residual blocks used for resampling hold such modules too. No parameter changes.
    """
    factors = resample_factors(spatial_dims, resample_axes)
    for m in module.modules():
        if isinstance(m, DiffusionUnetDownsample):
            if m.use_conv:
                m.op.conv.stride = factors
            else:
                m.op = Pool[Pool.AVG, spatial_dims](kernel_size=factors, stride=factors)
        elif isinstance(m, WrappedUpsample):
            m.upsample_non_trainable = nn.Upsample(scale_factor=tuple(float(f) for f in factors), mode="nearest")
    return module


def zero_attention_out_proj(module: nn.Module) -> nn.Module:
    """Zero the output projection of every MONAI self-attention block inside ``module`` (authors' init)."""
    for m in module.modules():
        if isinstance(m, SpatialAttentionBlock):
            zero_module(m.attn.out_proj)
    return module


def _cfg(cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in (cfg or {}).items():
        if k in defaults:
            out[k] = v
    return out


def _head_channels(channels: Iterable[int], num_heads: int) -> list[int]:
    chans = list(channels)
    if num_heads < 1 or any(c % num_heads for c in chans):
        raise ValueError(f"every entry of channels {chans} must be divisible by num_heads={num_heads}")
    return [c // num_heads for c in chans]


def monai_unet(c: Mapping[str, Any], channels_in: int) -> DiffusionModelUNet:
    """MONAI's ``DiffusionModelUNet`` (unconditional, ``channels_in`` in and out) from a resolved network section
    (``spatial_dims``, ``channels``, ``num_res_blocks``, ``attention_levels``, ``num_heads``, ``norm_*``,
    ``resblock_updown``, ``use_flash_attention``): the LDM's and the DAE's U-Net before their AdaGN blocks."""
    return DiffusionModelUNet(
        spatial_dims=int(c["spatial_dims"]),
        in_channels=channels_in,
        out_channels=channels_in,
        num_res_blocks=c["num_res_blocks"],
        channels=tuple(int(x) for x in c["channels"]),
        attention_levels=tuple(bool(x) for x in c["attention_levels"]),
        norm_num_groups=int(c["norm_num_groups"]),
        norm_eps=float(c["norm_eps"]),
        resblock_updown=bool(c["resblock_updown"]),
        num_head_channels=_head_channels(c["channels"], int(c["num_heads"])),
        with_conditioning=False,
        use_flash_attention=bool(c["use_flash_attention"]),
    )


def build_ldm_unet(cfg: Mapping[str, Any] | None = None) -> DiffusionModelUNet:
    """Build the stage-2 latent DDPM U-Net from the ``ldm`` config section (unknown keys are ignored).

    A MONAI ``DiffusionModelUNet`` whose residual blocks are :class:`AdaGNResnetBlock` (AdaGN time conditioning and
    dropout, neither of which MONAI's block has), resampling on ``resample_axes`` and zero-initialised attention
    output projections. ``model(x, timesteps)`` works exactly as MONAI's.
    """
    c = _cfg(cfg, LDM_DEFAULTS)
    unet = monai_unet(c, int(c["latent_channels"]))
    convert_resnet_blocks(unet, time_conditioning=str(c["time_conditioning"]), dropout=float(c["dropout"]))
    set_resample_axes(unet, str(c["resample_axes"]), int(c["spatial_dims"]))
    # MONAI zero-initialises conv2 of each residual block and the output conv; the converted blocks keep them.
    zero_attention_out_proj(unet)
    return unet


def count_parameters(*modules: nn.Module | None, trainable_only: bool = False) -> int:
    """Number of distinct parameters of the modules (shared ones counted once; all, or only those with
    ``requires_grad``)."""
    distinct = {id(p): p for module in modules if module is not None for p in module.parameters()}
    return sum(p.numel() for p in distinct.values() if p.requires_grad or not trainable_only)


# --- functional pieces of DiffusionModelUNet.forward, so a second branch can reuse the frozen encoder ---------------


def unet_time_embedding(unet: DiffusionModelUNet, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """MONAI's sinusoidal embedding + the U-Net's time MLP (steps 1 of ``DiffusionModelUNet.forward``)."""
    if timesteps.ndim == 0:
        timesteps = timesteps[None]
    t_emb = get_timestep_embedding(timesteps, unet.block_out_channels[0]).to(dtype=dtype)
    return unet.time_embed(t_emb)


def unet_encode(
    unet: DiffusionModelUNet, x: torch.Tensor, timesteps: torch.Tensor, cond_emb: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Time embedding, input conv and down path. Returns ``(h, skips, emb)``; ``skips`` feed :func:`unet_decode`.

    ``cond_emb`` (B, C) is appended to the time embedding (``emb = [t_emb, cond_emb]``) for AdaGN blocks built with
    ``cond_channels=C``; blocks without conditioning read only the time part.
    """
    emb = unet_time_embedding(unet, timesteps, x.dtype)
    if emb.shape[0] == 1 and x.shape[0] > 1:
        emb = emb.expand(x.shape[0], -1)
    if cond_emb is not None:
        emb = torch.cat([emb, cond_emb.to(emb.dtype)], dim=1)
    h = unet.conv_in(x)
    skips: list[torch.Tensor] = [h]
    for block in unet.down_blocks:
        h, res = block(hidden_states=h, temb=emb, context=None)
        skips.extend(res)
    return h, skips, emb


def unet_decode(
    middle_block: nn.Module | None,
    up_blocks: nn.ModuleList,
    out: nn.Module,
    h: torch.Tensor,
    skips: list[torch.Tensor],
    emb: torch.Tensor,
) -> torch.Tensor:
    """Middle block (skipped if ``None``), up path consuming ``skips``, output layer (steps 5-7 of MONAI's forward)."""
    if middle_block is not None:
        h = middle_block(hidden_states=h, temb=emb, context=None)
    skips = list(skips)
    for block in up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        h = block(hidden_states=h, res_hidden_states_list=res, temb=emb, context=None)
    if skips:
        raise RuntimeError(f"{len(skips)} skip connections left unused: encoder and decoder do not match")
    return out(h)
