"""Stage 1 (`ldae train-autoencoder`): MONAI AutoencoderKL + PatchDiscriminator (paper Table 2).

Loss of the generator (autoencoder): ``l1 * |x_rec - x| + kl * KL + perceptual * LPIPS(x_rec, x)
+ adversarial * LSGAN_G(D(x_rec))``; the discriminator minimises ``adversarial * LSGAN_D`` on real/fake patches.
The least-squares GAN works on the RAW discriminator logits by default (``adversarial_activation: none``, the
authors' code: MONAI ``PatchAdversarialLoss(no_activation_leastsq=True)``); ``leaky_relu`` is MONAI's default
LeakyReLU(0.05) on the logits. Both networks are optimised manually in one training step (two Adam optimisers,
generator lr 5e-5, discriminator lr 1e-4), with gradient accumulation (effective batch 8 = 1 x 8) and gradient norm
clipping (``train.gradient_clip_val``, 1.0 as the authors' code) of the generator AND the discriminator done here,
because Lightning leaves accumulation and clipping to the module under manual optimisation (the clipping runs in
``on_before_optimizer_step``, after Lightning has unscaled 16-mixed gradients). Note: under manual optimisation
Lightning counts every optimiser step, so ``global_step`` grows by 2 per accumulated G+D update
(``checkpoint_every_n_steps`` and ``max_steps`` count those).

The perceptual network (LPIPS SqueezeNet, fake-3-D ratio 0.5) needs pretrained weights that are never downloaded:
``perceptual_weights`` names a local file; without it the perceptual term is disabled, the warning is logged, kept
in ``summary.json``/``config.yaml`` and the metric ``perceptual_enabled`` is 0 in ``metrics.csv``. The autoencoder
may start from a local checkpoint (``init_weights``: the UK Biobank brain LDM autoencoder of the MONAI model zoo,
old MONAI-Generative key layout accepted); absent -> random init with a warning. Model selection
(``selection_metric``): best validation SSIM of the posterior-mean reconstruction (``ssim``, the paper; MONAI SSIM,
3-D, data range 1, Gaussian kernel 3, sigma 1.5) or lowest validation L1 (``l1``, the authors' code).

Outputs (``--out-dir``): weights.pt (AutoencoderKL state dict of the best checkpoint), config.yaml (resolved
config), metrics.csv, summary.json, best.ckpt/last.ckpt (links into the run folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ldae import verbs
from ldae.data.images import ImageDataset, records_of
from ldae.training import stage

STAGE = "autoencoder"
PAPER_PARAMETERS = "~14M (paper, Table 2)"

ADVERSARIAL_ACTIVATIONS = ("none", "leaky_relu")  # LSGAN on the raw logits (authors) | MONAI's LeakyReLU(0.05)
SELECTION_METRICS = {"ssim": ("val/ssim", "max"), "l1": ("val/l1", "min")}  # paper | authors' code


def selection(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(logged metric, mode) of stage-1 model selection from ``selection_metric``."""
    if cfg["selection_metric"] not in SELECTION_METRICS:
        raise ValueError(
            f"autoencoder.selection_metric must be one of {sorted(SELECTION_METRICS)}, got {cfg['selection_metric']!r}"
        )
    return SELECTION_METRICS[cfg["selection_metric"]]


def adversarial_loss(activation: str):
    """MONAI's least-squares PatchAdversarialLoss, on the raw logits (``none``) or after LeakyReLU(0.05)."""
    from monai.losses import PatchAdversarialLoss

    if activation not in ADVERSARIAL_ACTIVATIONS:
        raise ValueError(
            f"autoencoder.adversarial_activation must be one of {ADVERSARIAL_ACTIVATIONS}, got {activation!r}"
        )
    return PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=activation == "none")


def network_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flat dict ``ldae.models.autoencoder`` builders read, from a resolved stage config."""
    return {
        **cfg["network"],
        "perceptual_fake_3d_ratio": cfg["perceptual_fake_3d_ratio"],
        "perceptual_network": "squeeze",
    }


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, averaged over the batch (MONAI generative tutorials)."""
    z_mu, z_sigma = z_mu.float(), z_sigma.float()
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


class AutoencoderModule(stage.StepSeeding, pl.LightningModule):
    """AutoencoderKL (``self.autoencoder``) + PatchDiscriminator (``self.discriminator``), manual GAN optimisation.

    ``perceptual`` (a frozen MONAI PerceptualLoss or None) is kept outside the module's state dict, so checkpoints
    do not depend on whether the LPIPS weights were available.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        perceptual: torch.nn.Module | None = None,
        autoencoder: torch.nn.Module | None = None,
    ):
        super().__init__()
        from ldae.models import build_autoencoder, build_discriminator

        self.automatic_optimization = False
        self.cfg = dict(cfg)
        net = network_config(cfg)
        self.autoencoder = autoencoder if autoencoder is not None else build_autoencoder(net)
        self.discriminator = build_discriminator(net)
        self.adv_loss = adversarial_loss(cfg["adversarial_activation"])
        object.__setattr__(self, "_perceptual", perceptual)  # unregistered: not in checkpoints
        self.w = dict(cfg["loss"])
        self.accumulate = int(cfg["train"]["accumulate_grad_batches"])
        self.clip = cfg["train"]["gradient_clip_val"]
        self.seed = int(cfg["train"]["seed"])

    @property
    def perceptual(self) -> torch.nn.Module | None:
        return self._perceptual

    def on_fit_start(self) -> None:
        if self._perceptual is not None:
            self._perceptual.to(self.device)
        stage.cpu_channels_last_(self)

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.autoencoder.parameters(), lr=float(self.cfg["lr"]))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=float(self.cfg["disc_lr"]))
        return [opt_g, opt_d]

    # ---------------------------------------------------------------------------------------------- losses
    def generator_losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        z_mu, z_sigma = self.autoencoder.encode(x)
        z = z_mu + z_sigma * torch.randn_like(z_sigma)  # reparameterisation (seeded per step)
        recon = self.autoencoder.decode(z)
        parts = {"l1": F.l1_loss(recon.float(), x.float()), "kl": kl_divergence(z_mu, z_sigma)}
        if self.perceptual is not None and self.w["perceptual"] > 0:
            parts["perceptual"] = self.perceptual(recon.float(), x.float())
        if self.w["adversarial"] > 0:
            logits = self.discriminator(recon.contiguous().float())[-1]
            parts["adversarial"] = self.adv_loss(logits, target_is_real=True, for_discriminator=False)
        total = sum(self.w[name] * value for name, value in parts.items())
        return total, parts, recon

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        fake = self.discriminator(recon.detach().contiguous().float())[-1]
        real = self.discriminator(x.contiguous().float())[-1]
        loss = 0.5 * (
            self.adv_loss(fake, target_is_real=False, for_discriminator=True)
            + self.adv_loss(real, target_is_real=True, for_discriminator=True)
        )
        return self.w["adversarial"] * loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the gradient norm of the optimiser about to step (generator or discriminator). Lightning calls this
        inside ``optimizer.step()`` after unscaling 16-mixed gradients, so the threshold applies to the true ones."""
        if self.clip:
            self.clip_gradients(optimizer, gradient_clip_val=float(self.clip), gradient_clip_algorithm="norm")

    def _step(self, optimizer, stepping: bool) -> None:
        if not stepping:
            return
        optimizer.step()  # clipping: on_before_optimizer_step
        optimizer.zero_grad(set_to_none=True)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        x = stage.cpu_fast(batch["image"])
        stepping = (batch_idx + 1) % self.accumulate == 0 or bool(self.trainer.is_last_batch)

        self.toggle_optimizer(opt_g)
        loss_g, parts, recon = self.generator_losses(x)
        self.manual_backward(loss_g / self.accumulate)
        self._step(opt_g, stepping)
        self.untoggle_optimizer(opt_g)

        logs = {f"train/{k}": v.detach() for k, v in parts.items()}
        logs["train/loss_g"] = loss_g.detach()
        if self.w["adversarial"] > 0:
            self.toggle_optimizer(opt_d)
            loss_d = self.discriminator_loss(x, recon)
            self.manual_backward(loss_d / self.accumulate)
            self._step(opt_d, stepping)
            self.untoggle_optimizer(opt_d)
            logs["train/loss_d"] = loss_d.detach()
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log(
            "perceptual_enabled",
            float(self.perceptual is not None),
            on_step=False,
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=True,
        )
        self.log(
            "train/l1_step",
            parts["l1"].detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=x.shape[0],
            logger=False,
        )
        return loss_g.detach()

    # ------------------------------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx):
        from ldae.models import encode_mean

        x = stage.cpu_fast(batch["image"])
        recon = self.autoencoder.decode(encode_mean(self.autoencoder, x)).float()
        n = x.shape[0]
        self.log("val/ssim", stage.ssim_3d(recon, x).mean(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/l1", F.l1_loss(recon, x.float()), batch_size=n, sync_dist=True)
        self.log("val/mse", F.mse_loss(recon.clamp(0, 1), x.float()), batch_size=n, sync_dist=True)


def build_module(cfg: Mapping[str, Any]) -> tuple[AutoencoderModule, list[str], dict[str, Any]]:
    """The stage-1 module from a resolved config; returns it, the warnings raised (absent weights) and a status."""
    from ldae.models import build_autoencoder, build_perceptual_loss, load_pretrained_autoencoder

    net = network_config(cfg)

    def build():
        perceptual = None
        if cfg["loss"]["perceptual"] > 0:
            perceptual = build_perceptual_loss(net, cfg["perceptual_weights"] or None)
        autoencoder = load_pretrained_autoencoder(build_autoencoder(net), cfg["init_weights"] or None)
        return AutoencoderModule(cfg, perceptual, autoencoder)

    module, messages = stage.build_quietly(build)
    status = {
        "perceptual_enabled": module.perceptual is not None,
        "init_weights_loaded": bool(cfg["init_weights"]) and Path(cfg["init_weights"]).is_file(),
    }
    return module, messages, status


def main(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-autoencoder", "stage 1: AutoencoderKL + patch GAN on preprocessed images")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.models import count_parameters

    cfg = verbs.section(STAGE, args.config)
    monitor, mode = selection(cfg)
    images = verbs.parse_config_arg(args.images)
    run = stage.Run.of(args, cfg)

    table = records_of(args)
    train_paths = table.image[table.split == "train"].tolist()
    val_paths = table.image[table.split == "val"].tolist()
    if not train_paths:
        raise SystemExit("train-autoencoder: no training session passed QC")
    weights_files = [p for p in (cfg["init_weights"], cfg["perceptual_weights"]) if p and Path(p).is_file()]
    stamp = stage.fingerprint(
        {"autoencoder": cfg, "images": images}, [args.qc, args.sessions, args.splits, *table.image, *weights_files]
    )
    resumed = run.start(stamp)
    module, messages, status = build_module(cfg)
    resolved = {"stage": STAGE, "config": cfg, "images": images, "warnings": messages, **status}

    cache_dir = run.run_dir / "cache"
    train_ds = ImageDataset(train_paths, images, cfg["cache"], cache_dir)
    val_ds = ImageDataset(val_paths, images, cfg["cache"], cache_dir) if val_paths else None
    summary = {
        "selection": f"{mode} {monitor}",
        "resumed": resumed,
        "parameters": {
            "autoencoder": count_parameters(module.autoencoder),
            "discriminator": count_parameters(module.discriminator),
            "paper_autoencoder": PAPER_PARAMETERS,
        },
        "n_train": len(train_paths),
        "n_val": len(val_paths),
        "warnings": messages,
        **status,
    }
    return stage.fit_and_publish(
        run,
        module,
        resolved,
        train_ds,
        val_ds,
        lambda source: stage.checkpoint_state(source, "autoencoder."),
        summary,
        stage.Selection(monitor, mode, cfg["ema_decay"]),
        trainer_settings={"accumulate_grad_batches": 1, "gradient_clip_val": None},  # done by the module (manual)
        find_unused_parameters=True,
    )
