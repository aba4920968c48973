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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ldae import verbs
from ldae.data.images import ImageDataset, records_of
from ldae.data.latents import LatentStore
from ldae.models import io
from ldae.models.semantic_encoder import resolve_encoder_config
from ldae.training import stage

STAGE = "ldae"
PAPER_PARAMETERS = "~920M (paper, full model)"
FROZEN_PREFIX = "estimator.ldm."


class PairDataset(torch.utils.data.Dataset):
    """(image, scaled latent) of the same session: images through the cached MONAI transforms, latents from the
    latent store."""

    def __init__(self, images: ImageDataset, latents, rows: list[int], scale: float):
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

    def __init__(
        self,
        cfg: Mapping[str, Any],
        frozen_unet: torch.nn.Module,
        schedule,
        autoencoder: torch.nn.Module | None = None,
        scale_factor: float = 1.0,
        ddim=None,
    ):
        super().__init__()
        from ldae.diffusion import DDIMSettings
        from ldae.models import GradientEstimator, build_semantic_encoder

        self.cfg = dict(cfg)
        enc_cfg = {**cfg["encoder"], "pretrained_path": cfg["encoder"]["pretrained_path"] or None}
        self.encoder = build_semantic_encoder(enc_cfg)
        est = cfg["estimator"]
        self.estimator = GradientEstimator(
            frozen_unet,
            y_dim=self.encoder.y_dim,
            share_middle_block=bool(est["share_middle_block"]),
            init_branch_from_ldm=bool(est["init_branch_from_ldm"]),
            dropout=est["dropout"],
        )
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
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0], sync_dist=True)
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
        self.log(
            "val/loss",
            pdae_loss(self.estimator, x0, t.to(x0.device), noise, y, self.schedule, self.cfg["gamma"]),
            batch_size=n,
            sync_dist=True,
        )
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


def build_module(
    cfg: Mapping[str, Any], ldm_weights, ldm_config, autoencoder=None, scale_factor: float = 1.0, ddim=None
):
    """The stage-3 module; the stage-2 U-Net comes from ``ldm_weights`` (hard error if absent or mismatching)."""
    from ldae.models.io import load_frozen_unet, load_schedule, stage_section

    ldm_section = stage_section(ldm_config, "ldm")
    unet = load_frozen_unet(ldm_section["network"], ldm_weights)
    return LDAEModule(cfg, unet, load_schedule(ldm_config), autoencoder, scale_factor, ddim)


def parameter_counts(module: LDAEModule) -> dict[str, Any]:
    from ldae.models import count_parameters

    encoder = count_parameters(module.encoder)
    frozen = count_parameters(module.estimator.ldm)
    branch = count_parameters(module.estimator) - frozen
    total = encoder + frozen + branch
    return {
        "semantic_encoder": encoder,
        "frozen_ldm": frozen,
        "estimator_branch": branch,
        "trainable": encoder + branch,
        "total": total,
        "total_millions": round(total / 1e6, 1),
        "paper": PAPER_PARAMETERS,
    }


def check_ldm_matches(ldm_config: Mapping[str, Any], ldm: Path, store: LatentStore, latents, scale: float) -> None:
    """The stage-2 LDM must have been trained on these latents (shape and scale factor)."""
    ldm_latents = ldm_config.get("latents", {})
    if list(ldm_latents.get("shape", latents.shape[1:])) != list(latents.shape[1:]) or abs(
        float(ldm_latents.get("scale_factor", scale)) - scale
    ) > 1e-6 * max(1.0, abs(scale)):
        raise ValueError(
            f"the stage-2 LDM ({io.config_file(ldm)}) was trained on other latents "
            f"(shape {ldm_latents.get('shape')}, scale {ldm_latents.get('scale_factor')}) than "
            f"{store.root} (shape {list(latents.shape[1:])}, scale {scale}); rerun rule train_ldm"
        )


def publishable(source: Path) -> dict:
    """encoder.* + estimator.* of a checkpoint, without the frozen LDM (stored once, in the LDM's folder)."""
    weights = stage.prefixed_state(source, "encoder.")
    weights.update(
        {k: v for k, v in stage.prefixed_state(source, "estimator.").items() if not k.startswith(FROZEN_PREFIX)}
    )
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-ldae", "stage 3: LDAE (semantic encoder + gradient estimator, PDAE loss)")
    parser.add_argument("--latents", required=True, type=Path, help="latent store folder (rule encode_latents)")
    parser.add_argument("--ldm", required=True, type=Path, help="stage-2 model folder (rule train_ldm)")
    parser.add_argument("--autoencoder", required=True, type=Path, help="stage-1 model folder (rule train_autoencoder)")
    parser.add_argument("--ddim", default="", help="the `ddim` config section (validation sampler), JSON/YAML")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.diffusion import DDIMSettings

    cfg = verbs.section(STAGE, args.config)
    cfg["encoder"] = resolve_encoder_config(cfg["encoder"], f"{STAGE}.encoder")  # y_dim: null -> the resolved int
    images = verbs.parse_config_arg(args.images)
    ddim = DDIMSettings.from_config(verbs.section("ddim", args.ddim))
    run = stage.Run.of(args, cfg)

    # stage 2 first: a missing or mismatching LDM stops here, before anything else is done
    ldm_files = [io.weights_file(args.ldm), io.config_file(args.ldm)]
    for path, what in zip(ldm_files, ("weights", "config")):
        if not path.is_file():
            raise FileNotFoundError(
                f"stage-2 LDM {what} not found: {path}; run rule train_ldm first "
                "(stage 3 never trains on a randomly initialised LDM)"
            )
    ldm_config = io.read_config(args.ldm)
    store = LatentStore(Path(args.latents))
    latents, index, scale = store.read()
    check_ldm_matches(ldm_config, args.ldm, store, latents, scale)

    table = records_of(args)
    pairs = (
        index.reset_index()
        .rename(columns={"index": "row"})
        .merge(
            table[["participant_id", "session_id", "image"]].rename(columns={"image": "path"}),
            on=["participant_id", "session_id"],
            how="inner",
        )
    )
    train = pairs[pairs.split == "train"]
    val = pairs[pairs.split == "val"]
    if cfg["val_max_sessions"]:
        val = val.iloc[: int(cfg["val_max_sessions"])]
    if train.empty:
        raise SystemExit("train-ldae: no training session with both an image and a latent")
    files = [
        args.qc,
        args.sessions,
        args.splits,
        *store.files,
        *ldm_files,
        io.weights_file(args.autoencoder),
        io.config_file(args.autoencoder),
        *pairs.path,
    ]
    if cfg["encoder"]["pretrained_path"] and Path(cfg["encoder"]["pretrained_path"]).is_file():
        files.append(cfg["encoder"]["pretrained_path"])
    stamp = stage.fingerprint({"ldae": cfg, "images": images, "ddim": ddim.as_config()}, files)
    resumed = run.start(stamp)
    autoencoder = io.load_autoencoder(args.autoencoder)
    module, messages = stage.build_quietly(
        lambda: build_module(cfg, io.weights_file(args.ldm), ldm_config, autoencoder, scale, ddim)
    )
    resolved = {
        "stage": STAGE,
        "config": cfg,
        "images": images,
        "ddim": ddim.as_config(),
        "ldm": {"network": ldm_config["config"]["network"], "diffusion": ldm_config["config"]["diffusion"]},
        "latents": {"shape": list(latents.shape[1:]), "scale_factor": scale},
        "warnings": messages,
    }
    cache_dir = run.run_dir / "cache"

    def pair_dataset(rows):
        return PairDataset(
            ImageDataset(rows.path.tolist(), images, cfg["cache"], cache_dir), latents, rows.row.tolist(), scale
        )

    summary = {
        "resumed": resumed,
        "parameters": parameter_counts(module),
        "n_train": len(train),
        "n_val": len(val),
        "warnings": messages,
    }
    selection = stage.Selection("val/ssim", "max", cfg["ema_decay"])
    val_ds = pair_dataset(val) if len(val) else None
    return stage.fit_and_publish(run, module, resolved, pair_dataset(train), val_ds, publishable, summary, selection)
