"""Stage 2 (`ldae train-ldm`): the unconditional latent DDPM (paper Table 3) on the cached, scaled latents.

3-D MONAI DiffusionModelUNet with AdaGN residual blocks (channels 256/512/768, 2 residual blocks per level,
attention at the two deeper levels + middle, dropout 0.1; see :func:`ldae.models.build_ldm_unet`), T = 1000 linear
betas 1e-4 .. 0.02, epsilon prediction with the plain MSE, Adam lr 2.5e-5, EMA 0.999. No model selection: the
FINAL EMA weights are kept (``weights.pt``). Validation logs the epsilon MSE at fixed (seeded) timesteps and noise.
The latent channel count comes from the latent store (not from the config), so the U-Net always fits the latents.

Outputs (``--out-dir``): weights.pt (U-Net state dict, EMA), config.yaml (resolved config + latent shape and scale
factor), metrics.csv, summary.json (parameter count beside the paper's 486M), last.ckpt (link).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ldae import verbs
from ldae.data.latents import LatentDataset, LatentStore
from ldae.training import stage

STAGE = "ldm"
PAPER_PARAMETERS = "486M (paper: 'LDDIM @486M')"


class LDMModule(stage.StepSeeding, pl.LightningModule):
    """``self.unet`` (eps prediction on scaled latents) trained with the DDPM epsilon MSE."""

    def __init__(self, cfg: Mapping[str, Any], latent_channels: int):
        super().__init__()
        from ldae.diffusion import DiffusionSchedule
        from ldae.models import build_ldm_unet

        self.cfg = dict(cfg)
        self.unet = build_ldm_unet({**cfg["network"], "latent_channels": int(latent_channels)})
        self.schedule = DiffusionSchedule.from_config(cfg["diffusion"])
        self.seed = int(cfg["train"]["seed"])

    def on_fit_start(self) -> None:
        stage.cpu_channels_last_(self)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(stage.cpu_fast(x_t), timesteps=t)

    def training_step(self, batch, batch_idx):
        from ldae.diffusion import eps_loss

        x0 = batch["latent"]
        t = self.schedule.sample_timesteps(x0.shape[0], device=x0.device)
        loss = eps_loss(self.eps, x0, t, torch.randn_like(x0), self.schedule)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        from ldae.diffusion import eps_loss

        x0 = batch["latent"]
        gens = [stage.fixed_generator(self.seed, int(r)) for r in batch["row"]]
        t = torch.stack([torch.randint(0, self.schedule.num_train_timesteps, (), generator=g) for g in gens])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        loss = eps_loss(self.eps, x0, t.to(x0.device), noise.to(x0), self.schedule)
        self.log("val/loss", loss, prog_bar=True, batch_size=x0.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.unet.parameters(), lr=float(self.cfg["lr"]))


def main(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-ldm", "stage 2: unconditional latent DDPM on the cached latents", images=False)
    parser.add_argument("--latents", required=True, type=Path, help="latent store folder (rule encode_latents)")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.models import count_parameters

    cfg = verbs.section(STAGE, args.config)
    run = stage.Run.of(args, cfg)
    store = LatentStore(Path(args.latents))
    latents, index, scale = store.read()
    resumed = run.start(stage.fingerprint({"ldm": cfg}, store.files))
    module = LDMModule(cfg, latent_channels=latents.shape[1])
    resolved = {
        "stage": STAGE,
        "config": {**cfg, "network": {**cfg["network"], "latent_channels": int(latents.shape[1])}},
        "latents": {"shape": list(latents.shape[1:]), "scale_factor": scale},
    }
    train_ds = LatentDataset(store, "train")
    val_ds = LatentDataset(store, "val") if bool((index.split == "val").any()) else None
    n_params = count_parameters(module.unet)
    summary = {
        "resumed": resumed,
        "parameters": {"unet": n_params, "unet_millions": round(n_params / 1e6, 1), "paper": PAPER_PARAMETERS},
        "n_train": len(train_ds),
        "n_val": len(val_ds) if val_ds else 0,
        "latent_scale_factor": scale,
    }
    weights = partial(stage.checkpoint_state, prefix="unet.")  # EMA weights when EMA is on
    selection = stage.Selection(ema_decay=cfg["ema_decay"])  # no monitor: the final weights
    return stage.fit_and_publish(run, module, resolved, train_ds, val_ds, weights, summary, selection)
