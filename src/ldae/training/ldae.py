"""Stage 3 (`ldae train-ldae`): LDAE representation learning (paper Table 4, PDAE objective).

* Semantic encoder ``Enc(x0) -> y_sem`` on the IMAGE (2.5-D: per-slice ConvNeXt-Small, soft-attention pooling,
  cross-attention; ImageNet weights from a local file, ``encoder.pretrained_path``; absent -> random init + warning).
* Gradient estimator ``G(x_t, y_sem, t)`` on the LATENT: the trained stage-2 U-Net is loaded from its weights file
  and FROZEN (time embedding + down path shared; a missing or mismatching file is a hard error, never a random LDM);
  a new AdaGN decoder branch (middle block, up path, output layer) trains.
* Loss: ``lambda_t || eps - (eps_hat(x_t, t) + c_t G) ||^2`` with ``lambda_t = SNR_t^gamma / (1 + SNR_t)``,
  gamma 0.1 (:func:`ldae.diffusion.pdae_loss`). Adam lr 2.5e-5, EMA 0.999 over the trainable parts.
* Model selection: validation SSIM of the reconstruction from ``y_sem`` + RANDOM noise ``x_T`` (seeded per session,
  DDIM ``val_ddim_steps`` = 100, eta 0, ``guidance``, x0 clamp and grid from the config section ``ddim``, passed as
  ``--ddim``) decoded by the AE decoder, against the AE reconstruction of the session's latent; MONAI SSIM, 3-D,
  data range 1, Gaussian kernel 3, sigma 1.5.

The frozen LDM is not written into this stage's checkpoints (it is reloaded from the stage-2 file on resume) and
the AE decoder used for validation is not part of the module at all. The diffusion schedule and latent scale
factor are the LDM's (its config.yaml), so stage 3 can never disagree with stage 2.

Outputs (``--out-dir``): weights.pt (``encoder.*`` + ``estimator.*`` without the frozen LDM; load with
:func:`ldae.models.io.load_ldae`), config.yaml (resolved config + the LDM architecture and schedule), metrics.csv,
summary.json (parameter counts beside the paper's ~920M), best.ckpt/last.ckpt (links).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ldae.models.semantic_encoder import ENCODER_DEFAULTS as MODEL_ENCODER_DEFAULTS
from ldae.models.semantic_encoder import resolve_encoder_config
from ldae.training import common, stage

STAGE = "ldae"
PAPER_PARAMETERS = "~920M (paper, full model)"
FROZEN_PREFIX = "estimator.ldm."

# the config's `encoder` keys: the model's defaults, with "" (the config's blank) for no pretrained file
ENCODER_DEFAULTS: dict[str, Any] = {**MODEL_ENCODER_DEFAULTS, "pretrained_path": ""}
DEFAULTS: dict[str, Any] = {
    "encoder": ENCODER_DEFAULTS,
    "estimator": {"share_middle_block": False, "init_branch_from_ldm": False, "dropout": None},
    "gamma": 0.1,
    "lr": 2.5e-5,
    "ema_decay": 0.999,
    "guidance": "score",
    "val_ddim_steps": 100,
    "val_max_sessions": 0,
    "cache": "disk",
    "train": {
        "max_epochs": 200, "max_steps": -1, "batch_size": 4, "accumulate_grad_batches": 2,
        "gradient_clip_val": 1.0, "precision": "auto", "num_workers": 4, "checkpoint_every_n_steps": 500,
        "val_every_n_epochs": 5, "log_every_n_steps": 50, "seed": 0, "cpu_processes": 1,
    },
}


class PairDataset(torch.utils.data.Dataset):
    """(image, scaled latent) of the same session: images through the cached MONAI transforms, latents from the
    latent store."""

    def __init__(self, images: stage.ImageDataset, latents, rows: list[int], scale: float):
        if len(images) != len(rows):
            raise ValueError("one latent row per image expected")
        self.images, self.latents, self.rows, self.scale = images, latents, list(rows), float(scale)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        latent = torch.from_numpy(self.latents[row].copy()) * self.scale
        return {"image": self.images[i]["image"], "latent": latent, "row": row}


class LDAEModule(stage.StepSeeding, pl.LightningModule):
    """``self.encoder`` (semantic encoder) + ``self.estimator`` (frozen LDM + trainable branch).

    ``autoencoder`` (frozen, optional) and ``scale_factor`` are used only by validation to compare images; without
    an autoencoder validation reports latent-space metrics only. ``ddim``: the DDIM settings of the validation
    sampler (:class:`ldae.diffusion.DDIMSettings`, a ``ddim`` section or None for the defaults).
    """

    def __init__(self, cfg: Mapping[str, Any], frozen_unet: torch.nn.Module, schedule,
                 autoencoder: torch.nn.Module | None = None, scale_factor: float = 1.0, ddim=None):
        super().__init__()
        from ldae.diffusion import DDIMSettings
        from ldae.models import GradientEstimator, build_semantic_encoder

        self.cfg = dict(cfg)
        enc_cfg = {**cfg["encoder"], "pretrained_path": cfg["encoder"]["pretrained_path"] or None}
        self.encoder = build_semantic_encoder(enc_cfg)
        est = cfg["estimator"]
        self.estimator = GradientEstimator(frozen_unet, y_dim=self.encoder.y_dim,
                                           share_middle_block=bool(est["share_middle_block"]),
                                           init_branch_from_ldm=bool(est["init_branch_from_ldm"]),
                                           dropout=est["dropout"])
        self.schedule = schedule
        object.__setattr__(self, "_autoencoder", autoencoder)  # unregistered: not trained, saved or averaged
        self.scale_factor = float(scale_factor)
        self.ddim = ddim if isinstance(ddim, DDIMSettings) else DDIMSettings.from_config(ddim)
        self.seed = int(cfg["train"]["seed"])

    # --------------------------------------------------------------------------------------------- training
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.estimator.trainable_parameters()]

    def configure_optimizers(self):
        return torch.optim.Adam(self.trainable_parameters(), lr=float(self.cfg["lr"]))

    def training_step(self, batch, batch_idx):
        from ldae.diffusion import pdae_loss

        x0 = stage.cpu_fast(batch["latent"])
        y = self.encoder(batch["image"])
        t = self.schedule.sample_timesteps(x0.shape[0], device=x0.device)
        loss = pdae_loss(self.estimator, x0, t, torch.randn_like(x0), y, self.schedule, self.cfg["gamma"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0],
                 sync_dist=True)
        return loss

    # ------------------------------------------------------------------------------------------- validation
    def on_fit_start(self) -> None:
        if self._autoencoder is not None:
            self._autoencoder.to(self.device)
            stage.cpu_channels_last_(self._autoencoder)
        stage.cpu_channels_last_(self)

    def on_validation_start(self) -> None:
        self.on_fit_start()

    def validation_step(self, batch, batch_idx):
        from ldae.diffusion import ddim_sample, guided_eps_fn, pdae_loss

        x0, n = stage.cpu_fast(batch["latent"]), batch["latent"].shape[0]
        y = self.encoder(batch["image"])
        gens = [stage.fixed_generator(self.seed, int(r)) for r in batch["row"]]
        x_T = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(x0)
        t = torch.stack([torch.randint(0, self.schedule.num_train_timesteps, (), generator=g) for g in gens])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(x0)
        self.log("val/loss", pdae_loss(self.estimator, x0, t.to(x0.device), noise, y, self.schedule,
                                       self.cfg["gamma"]), batch_size=n, sync_dist=True)
        eps_fn = guided_eps_fn(self.estimator, y, self.schedule, self.cfg["guidance"])
        z = ddim_sample(eps_fn, x_T, self.schedule, int(self.cfg["val_ddim_steps"]), **self.ddim.kwargs())
        self.log("val/latent_mse", F.mse_loss(z.float(), x0.float()), batch_size=n, sync_dist=True)
        if self._autoencoder is not None:
            with torch.no_grad():
                rec = self._autoencoder.decode(z / self.scale_factor).float()
                ref = self._autoencoder.decode(x0 / self.scale_factor).float()
            self.log("val/ssim", stage.ssim_3d(rec, ref).mean(), prog_bar=True, batch_size=n, sync_dist=True)
            self.log("val/mse", F.mse_loss(rec.clamp(0, 1), ref.clamp(0, 1)), batch_size=n, sync_dist=True)

    # ------------------------------------------------------------------------- frozen LDM out of checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key] = {k: v for k, v in checkpoint[key].items() if not k.startswith(FROZEN_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        frozen = {FROZEN_PREFIX + k: v for k, v in self.estimator.ldm.state_dict().items()}
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key] = {**checkpoint[key], **frozen}


def build_module(cfg: Mapping[str, Any], ldm_weights, ldm_config, autoencoder=None, scale_factor: float = 1.0,
                 ddim=None):
    """The stage-3 module; the stage-2 U-Net comes from ``ldm_weights`` (hard error if absent or mismatching)."""
    from ldae.models import load_frozen_unet
    from ldae.models.io import load_schedule, stage_section

    ldm_section = stage_section(ldm_config, "ldm")
    unet = load_frozen_unet(ldm_section["network"], ldm_weights)
    return LDAEModule(cfg, unet, load_schedule(ldm_config), autoencoder, scale_factor, ddim)


def parameter_counts(module: LDAEModule) -> dict[str, Any]:
    from ldae.models import count_parameters

    encoder = count_parameters(module.encoder)
    frozen = count_parameters(module.estimator.ldm)
    branch = count_parameters(module.estimator) - frozen
    total = encoder + frozen + branch
    return {"semantic_encoder": encoder, "frozen_ldm": frozen, "estimator_branch": branch,
            "trainable": encoder + branch, "total": total, "total_millions": round(total / 1e6, 1),
            "paper": PAPER_PARAMETERS}


def main(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-ldae", "stage 3: LDAE (semantic encoder + gradient estimator, PDAE loss)")
    parser.add_argument("--latents", required=True, type=Path, help="latent store folder (rule encode_latents)")
    parser.add_argument("--ldm-weights", required=True, type=Path, help="stage-2 weights.pt (rule train_ldm)")
    parser.add_argument("--ldm-config", required=True, type=Path, help="stage-2 config.yaml (rule train_ldm)")
    parser.add_argument("--autoencoder-weights", required=True, type=Path)
    parser.add_argument("--autoencoder-config", required=True, type=Path)
    parser.add_argument("--ddim", default="", help="the `ddim` config section (validation sampler), JSON/YAML")
    args = parser.parse_args(argv)
    stage.setup_process(args.threads)
    from ldae.diffusion import DDIMSettings
    from ldae.models.io import load_autoencoder, read_config
    from ldae.training.data import LatentStore

    cfg = stage.resolve_config(DEFAULTS, stage.parse_config_arg(args.config), STAGE)
    cfg["encoder"] = resolve_encoder_config(cfg["encoder"], f"{STAGE}.encoder")  # y_dim: null -> the resolved int
    images = stage.parse_config_arg(args.images)
    ddim = DDIMSettings.from_config(stage.parse_config_arg(args.ddim))
    settings, run_dir = stage.run_settings(args, cfg)

    # stage 2 first: a missing or mismatching LDM stops here, before anything else is done
    for path, what in ((args.ldm_weights, "weights"), (args.ldm_config, "config")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"stage-2 LDM {what} not found: {path}; run rule train_ldm first "
                                    "(stage 3 never trains on a randomly initialised LDM)")
    ldm_config = read_config(args.ldm_config)
    store = LatentStore(Path(args.latents))
    latents, index, scale = store.read()
    ldm_latents = ldm_config.get("latents", {})
    if list(ldm_latents.get("shape", latents.shape[1:])) != list(latents.shape[1:]) or abs(
            float(ldm_latents.get("scale_factor", scale)) - scale) > 1e-6 * max(1.0, abs(scale)):
        raise ValueError(f"the stage-2 LDM ({args.ldm_config}) was trained on other latents "
                         f"(shape {ldm_latents.get('shape')}, scale {ldm_latents.get('scale_factor')}) than "
                         f"{args.latents} (shape {list(latents.shape[1:])}, scale {scale}); rerun rule train_ldm")

    table = stage.image_table(args)
    pairs = index.reset_index().rename(columns={"index": "row"}).merge(
        table[["participant_id", "session_id", "image"]].rename(columns={"image": "path"}),
        on=["participant_id", "session_id"], how="inner")
    train = pairs[pairs.split == "train"]
    val = pairs[pairs.split == "val"]
    if cfg["val_max_sessions"]:
        val = val.iloc[: int(cfg["val_max_sessions"])]
    if train.empty:
        raise SystemExit("train-ldae: no training session with both an image and a latent")
    files = [args.qc, args.sessions, args.splits, store.array_path, store.index_path, store.scale_path,
             args.ldm_weights, args.ldm_config, args.autoencoder_weights, args.autoencoder_config, *pairs.path]
    if cfg["encoder"]["pretrained_path"] and Path(cfg["encoder"]["pretrained_path"]).is_file():
        files.append(cfg["encoder"]["pretrained_path"])
    stamp = stage.fingerprint({"ldae": cfg, "images": images, "ddim": ddim.as_config()}, files)
    resumed = stage.prepare_run_dir(run_dir, stamp)

    pl.seed_everything(settings["seed"], workers=True)
    autoencoder = load_autoencoder(args.autoencoder_weights, args.autoencoder_config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = build_module(cfg, args.ldm_weights, ldm_config, autoencoder, scale, ddim)
    messages = [str(w.message) for w in caught if "not found" in str(w.message)]
    for message in messages:
        stage.log.warning(message)
    resolved = {
        "stage": STAGE, "config": cfg, "images": images, "ddim": ddim.as_config(),
        "ldm": {"network": ldm_config["config"]["network"], "diffusion": ldm_config["config"]["diffusion"]},
        "latents": {"shape": list(latents.shape[1:]), "scale_factor": scale}, "warnings": messages,
    }
    common.save_resolved_config(resolved, run_dir)

    cache_dir = run_dir / "cache"
    train_ds = PairDataset(stage.ImageDataset(train.path.tolist(), images, cfg["cache"], cache_dir),
                           latents, train.row.tolist(), scale)
    val_ds = (PairDataset(stage.ImageDataset(val.path.tolist(), images, cfg["cache"], cache_dir),
                          latents, val.row.tolist(), scale) if len(val) else None)
    trainer = common.build_trainer(settings, run_dir, monitor="val/ssim" if val_ds else None, mode="max",
                                   ema_decay=cfg["ema_decay"] or None, callbacks=[stage.SaveLastAtEnd(run_dir)])
    started = time.time()
    trainer.fit(module, stage.loader(train_ds, settings, shuffle=True),
                stage.loader(val_ds, settings, shuffle=False) if val_ds else None,
                ckpt_path=common.resume_checkpoint(run_dir), weights_only=True)
    if not trainer.is_global_zero:
        return 0
    source, best_score = stage.selected_checkpoint(trainer, run_dir, "val/ssim")
    weights = {f"encoder.{k}": v for k, v in stage.checkpoint_state(source, "encoder.").items()}
    weights.update({f"estimator.{k}": v for k, v in stage.checkpoint_state(source, "estimator.").items()
                    if not k.startswith("ldm.")})
    summary = {
        "stage": STAGE, "selected_checkpoint": source.name, "best_val_ssim": best_score,
        "global_step": trainer.global_step, "epochs": trainer.current_epoch, "resumed": resumed,
        "parameters": parameter_counts(module), "n_train": len(train), "n_val": len(val),
        "warnings": messages, "seconds_this_run": round(time.time() - started, 1),
    }
    stage.publish(args.out_dir, run_dir, weights, resolved, summary)
    return 0
