"""Tiny random-init models and phantom volumes for the tests: the sections of an AutoencoderKL (+ patch
discriminator), LDM, semantic encoder and DAE at a few thousand parameters, a tiny U-Net section and `train:` block
for the training verbs, pipelines built from them, 16^3 blobs. Importing it sets torch to 1 thread (the tests are
small; more threads only contend)."""

from __future__ import annotations

import torch

from ldae.diffusion import DiffusionSchedule
from ldae.models import GradientEstimator, VoxelDAE, build_autoencoder, build_ldm_unet
from ldae.models.pipelines import DAEPipeline, LDAEPipeline
from ldae.models.semantic_encoder import SemanticEncoder

torch.set_num_threads(1)

TINY_AE = dict(
    channels=[8, 16], num_res_blocks=1, attention_levels=[False, False], norm_num_groups=8, latent_channels=3
)
TINY_LDM = dict(
    latent_channels=3,
    channels=[16, 32, 32],
    num_res_blocks=1,
    attention_levels=[False, False, True],
    norm_num_groups=8,
    num_heads=1,
    dropout=0.0,
)
TINY_ENC = dict(
    backbone="tiny", tiny_dims=[8, 16], tiny_depths=[1, 1], y_dim=16, num_heads=8, chunk_size=16, attn_dropout=0.0
)
TINY_DAE = dict(
    channels=[8, 16], num_res_blocks=1, attention_levels=[False, False], norm_num_groups=8, y_dim=16, dropout=0.0
)
TINY_AE_GAN = {**TINY_AE, "disc_channels": 8, "disc_num_layers": 2}  # + a 2-layer, 8-channel patch discriminator
TINY_UNET = dict(channels=[8, 16, 16], num_res_blocks=1, attention_levels=[False, False, True], norm_num_groups=8)
TINY_TRAIN = {  # one epoch of batches of 2, a checkpoint every 2 steps, validation every epoch
    "max_epochs": 1,
    "batch_size": 2,
    "accumulate_grad_batches": 1,
    "num_workers": 0,
    "checkpoint_every_n_steps": 2,
    "log_every_n_steps": 1,
    "val_every_n_epochs": 1,
}
SHAPE = (16, 16, 16)


def perturb(module: torch.nn.Module, seed: int = 0, std: float = 1e-3) -> torch.nn.Module:
    """Small non-zero weights for zero-initialised layers (as after training), so y_sem changes the output while
    the DDIM ODE stays smooth enough for inversion round trips."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1 and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_ldae(seed: int = 0, guidance: str = "score") -> LDAEPipeline:
    torch.manual_seed(seed)
    ae = build_autoencoder(TINY_AE)
    ldm = perturb(build_ldm_unet(TINY_LDM), seed)
    est = perturb(GradientEstimator(ldm, y_dim=TINY_ENC["y_dim"]), seed + 1)
    enc = SemanticEncoder(TINY_ENC)
    return LDAEPipeline(ae, est, enc, DiffusionSchedule(), scale_factor=2.0, guidance=guidance)


def tiny_dae(seed: int = 0, shape=None) -> DAEPipeline:
    torch.manual_seed(seed)
    dae = perturb(VoxelDAE(TINY_DAE, TINY_ENC), seed)
    return DAEPipeline(dae, DiffusionSchedule(), shape=shape)


def volumes(n: int, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    """Smooth blobs in [0, 1] (a brain-like phantom: bright ellipsoid, darker core)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij"))
    out = []
    for _ in range(n):
        r = 0.6 + 0.1 * torch.rand(3, generator=g)
        d = ((grid / r[:, None, None, None]) ** 2).sum(0)
        v = (d < 1).float() * 0.8 - (d < 0.3 * (1 + torch.rand(1, generator=g))).float() * 0.4
        out.append((v + 0.05 * torch.rand(shape, generator=g)).clamp(0, 1))
    return torch.stack(out)[:, None]
