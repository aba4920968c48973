"""Baselines of Tables 5-7 (`ldae train-dae`, `ldae train-supervised`).

Voxel-space DAE (Preechakul et al. 2022, "DiffAE"; the authors published no code): the SAME 2.5-D semantic encoder
as the LDAE (section ``ldae.encoder``, overridable under ``dae.encoder``) and a y-conditioned image-space U-Net
(:class:`ldae.models.VoxelDAE`), trained JOINTLY from scratch with the plain DDPM epsilon MSE on the images
(``2 x - 1``; T = 1000 linear betas, like the LDM), Adam, EMA. At ``dae.shape`` (null: the images' shape) - the
resolution that fits memory. Model selection: best validation SSIM of the reconstruction from y_sem + random
noise (seeded per session, DDIM ``val_ddim_steps`` with the ``ddim`` section's x0 clamp and grid, passed as
``--ddim``; the clamp range is read on the signed [-1, 1] scale, see :class:`ldae.models.pipelines.DAEPipeline`),
the LDAE's criterion.

Supervised encoder: the same encoder + one linear head trained end-to-end on the label, one model per task: ``ad``
(AD vs CN, BCE, label CN = 1 as the probes) and ``age`` (MSE on the age z-scored with the training statistics).
Trained on probe_train, selected (lowest validation loss) on probe_val - the probes' splits, so Table 7 compares
like with like; the test split is never seen.

Outputs (``--out-dir``): weights.pt (``dae.*`` / ``model.*``), config.yaml (resolved config incl. the encoder),
metrics.csv, summary.json (parameter counts, target statistics), best.ckpt/last.ckpt links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import torch

from ldae import verbs
from ldae.data.images import ImageDataset, records_of
from ldae.models import io
from ldae.training import stage

TASKS = ("ad", "age")


def resolve_encoder(ldae_encoder: Mapping[str, Any] | str | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The LDAE's encoder section (``ldae.encoder``) with the baseline's overrides, over the encoder defaults;
    ``y_dim`` resolved to an integer."""
    from ldae.models.semantic_encoder import resolve_encoder_config

    merged = verbs.section("ldae.encoder", ldae_encoder)
    merged = verbs.resolve_config(merged, overrides or {}, "encoder")
    return resolve_encoder_config(merged, "ldae.encoder (with this baseline's encoder overrides)")


# ------------------------------------------------------------------------------------------------------- DAE
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
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0],
                 sync_dist=True)
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
            rec = pipe.from_diffusion(ddim_sample(pipe.eps_fn(y), x_T, self.schedule, int(self.cfg["val_ddim_steps"]),
                                                  **pipe.ddim_kwargs()))
        self.log("val/ssim", stage.ssim_3d(rec.float(), x.float()).mean(), prog_bar=True, batch_size=n,
                 sync_dist=True)


# ------------------------------------------------------------------------------------------------ supervised
class TargetDataset(torch.utils.data.Dataset):
    def __init__(self, images: ImageDataset, targets: list[float]):
        self.images, self.targets = images, [float(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {**self.images[i], "target": torch.tensor(self.targets[i], dtype=torch.float32)}


class SupervisedModule(stage.StepSeeding, pl.LightningModule):
    """``self.model``: semantic encoder + linear head, end-to-end on one task."""

    def __init__(self, cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], task: str):
        super().__init__()
        from ldae.models.baselines import supervised_for_config

        if task not in TASKS:
            raise ValueError(f"unknown supervised task {task!r} ({', '.join(TASKS)})")
        self.cfg, self.task = dict(cfg), task
        self.model = supervised_for_config(encoder_cfg)
        self.loss_fn = torch.nn.BCEWithLogitsLoss() if task == "ad" else torch.nn.MSELoss()
        self.seed = int(cfg["train"]["seed"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=float(self.cfg["lr"]),
                                weight_decay=float(self.cfg["weight_decay"]))

    def _step(self, batch, name: str):
        out = self.model(batch["image"])[:, 0]
        loss = self.loss_fn(out, batch["target"])
        n = batch["target"].shape[0]
        self.log(f"{name}/loss", loss, prog_bar=True, on_step=name == "train", on_epoch=True, batch_size=n,
                 sync_dist=True)
        if self.task == "ad":
            acc = ((out > 0).float() == batch["target"]).float().mean()
            self.log(f"{name}/accuracy", acc, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")


def supervised_targets(table, task: str, positive_class: str = "CN"):
    """Rows and targets of one task: AD/CN sessions (label = diagnosis == positive_class) or every session with
    an age."""
    if task == "ad":
        rows = table[table.diagnosis.isin(["AD", "CN"])]
        return rows, (rows.diagnosis == positive_class).astype(float).tolist()
    rows = table[table.age.notna()]
    return rows, rows.age.astype(float).tolist()


# ------------------------------------------------------------------------------------------------------ CLI
def baseline_parser(verb: str, description: str):
    parser = stage.stage_parser(verb, description)
    parser.add_argument("--encoder", default="", help="the LDAE's encoder section (ldae.encoder), JSON/YAML")
    return parser


def image_datasets(train, val, images, cfg, run_dir: Path):
    """(training, validation or None) image datasets of two tables with an ``image`` column, cached in the run."""
    def dataset(rows):
        return ImageDataset(rows.image.tolist(), images, cfg["cache"], run_dir / "cache")

    return dataset(train), (dataset(val) if len(val) else None)


def main_dae(argv: list[str] | None = None) -> int:
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
    settings, run_dir = stage.run_settings(args, cfg)
    table = records_of(args)
    train, val = table[table.split == "train"], table[table.split == "val"]
    if cfg["val_max_sessions"]:
        val = val.iloc[: int(cfg["val_max_sessions"])]
    if train.empty:
        raise SystemExit("train-dae: no training session")
    files = [args.qc, args.sessions, args.splits, *table.image]
    stamp = stage.fingerprint({"dae": cfg, "encoder": enc, "images": images, "ddim": ddim.as_config()}, files)
    resumed = stage.prepare_run_dir(run_dir, stamp)
    pl.seed_everything(settings["seed"], workers=True)
    module, messages = stage.build_quietly(lambda: DAEModule(cfg, enc, ddim=ddim))
    resolved = {"stage": "dae", "config": cfg, "encoder": enc, "images": images, "ddim": ddim.as_config(),
                "warnings": messages}
    train_ds, val_ds = image_datasets(train, val, images, cfg, run_dir)
    n_enc, n_all = count_parameters(module.dae.encoder), count_parameters(module.dae)
    extra = {"resumed": resumed, "n_train": len(train), "n_val": len(val), "warnings": messages,
             "parameters": {"semantic_encoder": n_enc, "unet": n_all - n_enc, "total": n_all,
                            "total_millions": round(n_all / 1e6, 1), "paper": "130M (paper, Table 5)"}}
    return stage.fit_and_publish(args, module, resolved, settings, run_dir, train_ds, val_ds,
                                 lambda source: stage.prefixed_state(source, "dae."), extra, "val/ssim", "max",
                                 cfg["ema_decay"])


def untrainable_reason(train, task: str) -> str | None:
    if train.empty:
        return f"no probe_train session for task {task}"
    if task == "ad" and train.target.nunique() < 2:
        return "probe_train holds a single diagnosis (AD or CN)"
    return None


def main_supervised(argv: list[str] | None = None) -> int:
    """``ldae train-supervised``."""
    parser = baseline_parser("train-supervised", "baseline: the semantic encoder + linear head, end-to-end")
    parser.add_argument("--task", required=True, choices=TASKS, help="ad: AD vs CN (BCE); age: regression (MSE)")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.models import count_parameters

    cfg = verbs.section("supervised", args.config)
    enc = resolve_encoder(args.encoder, cfg["encoder"])
    images = verbs.parse_config_arg(args.images)
    settings, run_dir = stage.run_settings(args, cfg)
    table = records_of(args)
    rows, targets = supervised_targets(table, args.task)
    rows = rows.assign(target=targets)
    train = rows[(rows.split == "train") & (rows.probe_split == "probe_train")]
    val = rows[(rows.split == "train") & (rows.probe_split == "probe_val")]
    untrainable = untrainable_reason(train, args.task)
    if untrainable:  # a tiny cohort: publish the untrained model, say so (its probe rows are n/a anyway)
        stage.log.warning("train-supervised: %s: the model is NOT trained", untrainable)
        pl.seed_everything(settings["seed"], workers=True)
        module, messages = stage.build_quietly(lambda: SupervisedModule(cfg, enc, args.task))
        resolved = {"stage": "supervised", "task": args.task, "config": cfg, "encoder": enc, "images": images,
                    "target": {"mean": 0.0, "std": 1.0}, "warnings": [*messages, untrainable]}
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stage.publish_run(args.out_dir, run_dir, {f"model.{k}": v for k, v in module.model.state_dict().items()},
                          resolved, {"stage": "supervised", "task": args.task, "trained": False, "reason": untrainable})
        return 0
    stats = {"mean": 0.0, "std": 1.0}
    if args.task == "age":  # z-score the target with the TRAINING statistics only
        stats = {"mean": float(train.target.mean()), "std": float(train.target.std(ddof=0)) or 1.0}
    files = [args.qc, args.sessions, args.splits, *rows.image]
    stamp = stage.fingerprint({"supervised": cfg, "encoder": enc, "images": images, "task": args.task}, files)
    resumed = stage.prepare_run_dir(run_dir, stamp)
    pl.seed_everything(settings["seed"], workers=True)
    module, messages = stage.build_quietly(lambda: SupervisedModule(cfg, enc, args.task))
    resolved = {"stage": "supervised", "task": args.task, "config": cfg, "encoder": enc, "images": images,
                "target": stats, "warnings": messages}
    train_images, val_images = image_datasets(train, val, images, cfg, run_dir)
    train_ds = TargetDataset(train_images, [(t - stats["mean"]) / stats["std"] for t in train.target])
    val_ds = (TargetDataset(val_images, [(t - stats["mean"]) / stats["std"] for t in val.target])
              if val_images is not None else None)
    n = count_parameters(module.model)
    extra = {"task": args.task, "resumed": resumed, "n_train": len(train), "n_val": len(val), "target": stats,
             "warnings": messages, "parameters": {"total": n, "total_millions": round(n / 1e6, 1)}}
    return stage.fit_and_publish(args, module, resolved, settings, run_dir, train_ds, val_ds,
                                 lambda source: stage.prefixed_state(source, "model."), extra, "val/loss", "min")
