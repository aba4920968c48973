"""LDAE gradient estimator G(x_t, y_sem, t) on the latent (paper Sec. stage 3; PDAE, Zhang et al. 2022).

The pretrained stage-2 LDM U-Net stays whole and FROZEN (``requires_grad=False``, always in eval mode). Its time
embedding and down path are shared: they produce the skip connections and the bottleneck features. A NEW trainable
decoder branch - middle block, up path and output layer with the LDM's own configuration (built by deep-copying
the MONAI blocks of the LDM) - consumes those skips. Its residual blocks are :class:`AdaGNResnetBlock` s that take
the timestep and ``y_sem`` by AdaGN: ``h = (1 + z_s) * (GN(h) * (1 + t_s) + t_b) + z_b`` with ``y`` projected by
``Linear(y_dim -> time-embedding dim)`` and then per block by ``SiLU + Linear(-> 2 * C)``. The output convolution
is zero-initialised, so ``G == 0`` at initialisation and the LDAE starts exactly at the pretrained LDM. Being copies
of the LDM's blocks, the branch resamples on the LDM's axes (``ldm.network.resample_axes``) and uses its GroupNorm
epsilon; a freshly initialised branch zeroes its residual ``conv2`` s and attention output projections (authors'
init). Parameters: branch + ``y_proj`` 378,411,779 at the paper size (as the authors' ``ShiftUNet`` branch).

Config keys (section ``ldae``): ``ldm_checkpoint`` (path to the stage-2 weights - required, never silently random),
``y_dim`` (768), ``share_middle_block`` (false: the new branch has its own middle block, as in the paper),
``init_branch_from_ldm`` (false: fresh random init; true: start the branch from the LDM decoder weights),
``branch_dropout`` (null -> the LDM's ``ldm.dropout``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from monai.networks.nets import DiffusionModelUNet

from .ldm_unet import (
    AdaGNResnetBlock,
    convert_resnet_blocks,
    unet_decode,
    unet_encode,
    zero_attention_out_proj,
    zero_module,
)

__all__ = ["GradientEstimator"]


def _reset_parameters(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()  # type: ignore[operator]


def _dropout_of(unet: nn.Module) -> float:
    for m in unet.modules():
        if isinstance(m, AdaGNResnetBlock):
            return float(m.dropout.p)
    return 0.0


class GradientEstimator(nn.Module):
    """Frozen LDM + new AdaGN decoder branch.

    Args:
        frozen_unet: the pretrained stage-2 U-Net (from :func:`ldae.models.io.load_frozen_unet`). It is frozen in place.
        y_dim: size of the semantic code ``y_sem``.
        share_middle_block: if True the LDM's (frozen) middle block is shared too and the branch starts at the up
            path; default False (paper: the new branch has "middle blocks, upsampling path, output layer").
        init_branch_from_ldm: start the branch from a copy of the LDM decoder weights instead of a fresh init
            (the output conv is zeroed in both cases).
        dropout: dropout in the branch's residual blocks (``None``: the LDM's dropout).
    """

    def __init__(
        self,
        frozen_unet: DiffusionModelUNet,
        y_dim: int = 768,
        share_middle_block: bool = False,
        init_branch_from_ldm: bool = False,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(frozen_unet, DiffusionModelUNet):
            raise TypeError(f"frozen_unet must be a monai DiffusionModelUNet, got {type(frozen_unet).__name__}")
        if frozen_unet.with_conditioning:
            raise ValueError("frozen_unet must be unconditional (with_conditioning=False)")
        self.y_dim = int(y_dim)
        self.share_middle_block = bool(share_middle_block)
        self.ldm = frozen_unet
        self.ldm.requires_grad_(False)
        self.ldm.eval()

        temb_dim = self.ldm.time_embed[-1].out_features
        self.temb_dim = temb_dim
        drop = _dropout_of(self.ldm) if dropout is None else float(dropout)

        branch = nn.ModuleDict()
        if not self.share_middle_block:
            branch["middle_block"] = copy.deepcopy(self.ldm.middle_block)
        branch["up_blocks"] = copy.deepcopy(self.ldm.up_blocks)
        branch["out"] = copy.deepcopy(self.ldm.out)
        convert_resnet_blocks(branch, time_conditioning="scale_shift", dropout=drop, cond_channels=temb_dim)
        branch.requires_grad_(True)
        if not init_branch_from_ldm:
            _reset_parameters(branch)
            for m in branch.modules():
                if isinstance(m, AdaGNResnetBlock):
                    zero_module(m.conv2)  # MONAI's residual-block convention
            zero_attention_out_proj(branch)  # authors' init
        zero_module(branch["out"][-1])  # G == 0 at init
        self.branch = branch
        self.y_proj = nn.Linear(self.y_dim, temb_dim)

    # --- frozen part -----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> GradientEstimator:
        super().train(mode)
        self.ldm.eval()  # the LDM is frozen: no dropout, whatever Lightning asks
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new branch and the y projection (what the optimiser and EMA should see)."""
        return [p for n, p in self.named_parameters() if not n.startswith("ldm.")]

    def _frozen_encode(self, x_t: torch.Tensor, t: torch.Tensor):
        with torch.no_grad():
            h, skips, emb = unet_encode(self.ldm, x_t, t)
            if self.share_middle_block:
                h = self.ldm.middle_block(hidden_states=h, temb=emb, context=None)
        return h, skips, emb

    @torch.no_grad()
    def frozen_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The frozen LDM's epsilon prediction ``eps_hat(x_t, t)``."""
        return self.ldm(x_t, t)

    # --- forward ---------------------------------------------------------------------------------------------------
    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, y_sem: torch.Tensor, return_eps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``G(x_t, y_sem, t)`` (same shape as ``x_t``); with ``return_eps`` also the frozen ``eps_hat(x_t, t)``,
        computed from the same frozen encoder pass."""
        if y_sem.ndim != 2 or y_sem.shape[1] != self.y_dim or y_sem.shape[0] != x_t.shape[0]:
            raise ValueError(f"y_sem must be (B={x_t.shape[0]}, {self.y_dim}), got {tuple(y_sem.shape)}")
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        h, skips, emb = self._frozen_encode(x_t, t)
        emb_cond = torch.cat([emb, self.y_proj(y_sem.to(emb.dtype))], dim=1)
        g = unet_decode(
            self.branch["middle_block"] if not self.share_middle_block else None,
            self.branch["up_blocks"],
            self.branch["out"],
            h,
            skips,
            emb_cond,
        )
        if not return_eps:
            return g
        with torch.no_grad():
            mid = None if self.share_middle_block else self.ldm.middle_block  # shared: h has been through it
            eps = unet_decode(mid, self.ldm.up_blocks, self.ldm.out, h, skips, emb)
        return g, eps
