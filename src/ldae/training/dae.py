"""`ldae train-dae`: the voxel-space DAE baseline of Tables 5-7.

Preechakul et al. 2022, "DiffAE" (the authors published no code): the SAME 2.5-D semantic encoder as the LDAE
(section ``ldae.encoder``, overridable under ``dae.encoder``) and a y-conditioned image-space U-Net
(:class:`ldae.models.VoxelDAE`), trained JOINTLY from scratch with the plain DDPM epsilon MSE on the images
(``2 x - 1``; T = 1000 linear betas, like the LDM), Adam, EMA. At ``dae.shape`` (null: the images' shape) - the
resolution that fits memory. Model selection: best validation SSIM of the reconstruction from y_sem + random
noise (seeded per session, DDIM ``val_ddim_steps`` with the ``ddim`` section's x0 clamp and grid, passed as
``--ddim``; the clamp range is read on the signed [-1, 1] scale, see :class:`ldae.models.pipelines.DAEPipeline`),
the LDAE's criterion. Outputs: see :mod:`ldae.training.baselines`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch

from ldae import verbs
from ldae.data.images import records_of
from ldae.models import io
from ldae.training import stage
from ldae.training.baselines import baseline_parser, image_datasets, resolve_encoder


class DAEModule(stage.StepSeeding, pl.LightningModule):
    """``self.dae``: semantic encoder + conditional image U-Net, trained jointly with the epsilon MSE."""

    def __init__(self, cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], ddim=None):
        super().__init__()
        from ldae.diffusion import DDIMSettings, DiffusionSchedule
        from ldae.models.baselines import dae_for_config

        self.cfg = dict(cfg)
        self.dae = dae_for_config(cfg, encoder_cfg)
        self.schedule = DiffusionSchedule.from_config(cfg["diffusion"])
        self.shape = tuple(int(s) for s in cfg["shape"]) if cfg["shape"] else None
        self.signed = bool(cfg["signed"])
        self.ddim = ddim if isinstance(ddim, DDIMSettings) else DDIMSettings.from_config(ddim)
        self.seed = int(cfg["train"]["seed"])

    def pipeline(self) -> io.DAEPipeline:
        """The module's networks as the DAE's pipeline (no eval() switch: used inside training/validation)."""
        return io.DAEPipeline(self.dae, self.schedule, self.shape, self.signed, self.ddim, eval_mode=False)

    def configure_optimizers(self):
        return torch.optim.Adam(self.dae.parameters(), lr=float(self.cfg["lr"]))

    def _loss(self, images, t, noise):
        from ldae.diffusion import eps_loss

        pipe = self.pipeline()
        x = pipe.resize(images)
        y = self.dae.encode(x)
        return eps_loss(lambda xt, tt: self.dae(xt, tt, y), pipe.to_diffusion(x), t, noise, self.schedule), x, y

    def training_step(self, batch, batch_idx):
        images = batch["image"]
        shape = (images.shape[0], 1, *(self.shape or images.shape[2:]))
        t = self.schedule.sample_timesteps(images.shape[0], device=images.device)
        loss, _, _ = self._loss(images, t, torch.randn(shape, device=images.device))
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0], sync_dist=True
        )
        return loss

    def validation_step(self, batch, batch_idx):
        from ldae.diffusion import ddim_sample

        images, n = batch["image"], batch["image"].shape[0]
        shape = (1, *(self.shape or images.shape[2:]))
        gens = [stage.fixed_generator(self.seed, int(i)) for i in batch["index"]]
        t = torch.stack([torch.randint(0, self.schedule.num_train_timesteps, (), generator=g) for g in gens])
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(images)
        x_T = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(images)
        loss, x, y = self._loss(images, t.to(images.device), noise)
        self.log("val/loss", loss, batch_size=n, sync_dist=True)
        pipe = self.pipeline()
        with torch.no_grad():
            rec = pipe.from_diffusion(
                ddim_sample(pipe.eps_fn(y), x_T, self.schedule, int(self.cfg["val_ddim_steps"]), **pipe.ddim_kwargs())
            )
        self.log("val/ssim", stage.ssim_3d(rec.float(), x.float()).mean(), prog_bar=True, batch_size=n, sync_dist=True)


def main(argv: list[str] | None = None) -> int:
    """``ldae train-dae``."""
    parser = baseline_parser("train-dae", "baseline: voxel-space diffusion autoencoder (DiffAE-style)")
    parser.add_argument("--ddim", default="", help="the `ddim` config section (validation sampler), JSON/YAML")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.diffusion import DDIMSettings
    from ldae.models import count_parameters

    cfg = verbs.section("dae", args.config)
    enc = resolve_encoder(args.encoder, cfg["encoder"])
    images = verbs.parse_config_arg(args.images)
    ddim = DDIMSettings.from_config(verbs.section("ddim", args.ddim))
    run = stage.Run.of(args, cfg)
    table = records_of(args)
    train, val = table[table.split == "train"], table[table.split == "val"]
    if cfg["val_max_sessions"]:
        val = val.iloc[: int(cfg["val_max_sessions"])]
    if train.empty:
        raise SystemExit("train-dae: no training session")
    files = [args.qc, args.sessions, args.splits, *table.image]
    stamp = stage.fingerprint({"dae": cfg, "encoder": enc, "images": images, "ddim": ddim.as_config()}, files)
    resumed = run.start(stamp)
    module, messages = stage.build_quietly(lambda: DAEModule(cfg, enc, ddim=ddim))
    resolved = {
        "stage": "dae",
        "config": cfg,
        "encoder": enc,
        "images": images,
        "ddim": ddim.as_config(),
        "warnings": messages,
    }
    train_ds, val_ds = image_datasets(train, val, images, cfg, run.run_dir)
    n_enc, n_all = count_parameters(module.dae.encoder), count_parameters(module.dae)
    extra = {
        "resumed": resumed,
        "n_train": len(train),
        "n_val": len(val),
        "warnings": messages,
        "parameters": {
            "semantic_encoder": n_enc,
            "unet": n_all - n_enc,
            "total": n_all,
            "total_millions": round(n_all / 1e6, 1),
            "paper": "130M (paper, Table 5)",
        },
    }
    selection = stage.Selection("val/ssim", "max", cfg["ema_decay"])
    weights = partial(stage.prefixed_state, prefix="dae.")
    return stage.fit_and_publish(run, module, resolved, train_ds, val_ds, weights, extra, selection)
