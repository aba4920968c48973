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

import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import torch

from ldae.models.baselines import DAE_DEFAULTS as MODEL_DAE_DEFAULTS
from ldae.training import common, stage
from ldae.training.ldm import DIFFUSION_DEFAULTS

# the config's `network` keys: the model's defaults minus what the stage fixes (dimensions, input channels)
# or takes from the semantic encoder (y_dim)
DAE_NETWORK_DEFAULTS: dict[str, Any] = {
    key: value for key, value in MODEL_DAE_DEFAULTS.items() if key not in ("spatial_dims", "in_channels", "y_dim")
}
DAE_DEFAULTS: dict[str, Any] = {
    "network": DAE_NETWORK_DEFAULTS,
    "encoder": {},
    "diffusion": DIFFUSION_DEFAULTS,
    "shape": None,
    "signed": True,
    "lr": 1e-4,
    "ema_decay": 0.999,
    "val_ddim_steps": 100,
    "val_max_sessions": 0,
    "cache": "disk",
    "train": {
        "max_epochs": 200, "max_steps": -1, "batch_size": 2, "accumulate_grad_batches": 4,
        "gradient_clip_val": 1.0, "precision": "auto", "num_workers": 4, "checkpoint_every_n_steps": 500,
        "val_every_n_epochs": 5, "log_every_n_steps": 50, "seed": 0, "cpu_processes": 1,
    },
}
SUPERVISED_DEFAULTS: dict[str, Any] = {
    "encoder": {},
    "lr": 1e-4,
    "weight_decay": 0.0,
    "cache": "disk",
    "train": {
        "max_epochs": 50, "max_steps": -1, "batch_size": 4, "accumulate_grad_batches": 1,
        "gradient_clip_val": 1.0, "precision": "auto", "num_workers": 4, "checkpoint_every_n_steps": 500,
        "val_every_n_epochs": 1, "log_every_n_steps": 50, "seed": 0, "cpu_processes": 1,
    },
}
TASKS = ("ad", "age")


def resolve_encoder(ldae_encoder: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The LDAE's encoder section (``ldae.encoder``) with the baseline's overrides, over the encoder defaults;
    ``y_dim`` resolved to an integer."""
    from ldae.models.semantic_encoder import resolve_encoder_config
    from ldae.training.ldae import ENCODER_DEFAULTS

    merged = stage.resolve_config(ENCODER_DEFAULTS, ldae_encoder or {}, "ldae.encoder")
    merged = stage.resolve_config(merged, overrides or {}, "encoder")
    return resolve_encoder_config(merged, "ldae.encoder (with this baseline's encoder overrides)")


def _encoder_cfg(enc: Mapping[str, Any], weights_loaded: bool = False) -> dict[str, Any]:
    path = None if weights_loaded else (enc.get("pretrained_path") or None)
    return {**enc, "pretrained_path": path}


# ------------------------------------------------------------------------------------------------------- DAE
class DAEModule(stage.StepSeeding, pl.LightningModule):
    """``self.dae``: semantic encoder + conditional image U-Net, trained jointly with the epsilon MSE."""

    def __init__(self, cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], weights_loaded: bool = False,
                 ddim=None):
        super().__init__()
        from ldae.diffusion import DDIMSettings, DiffusionSchedule
        from ldae.models import build_dae

        self.cfg = dict(cfg)
        from ldae.models.semantic_encoder import resolve_y_dim

        net = {**cfg["network"], "y_dim": resolve_y_dim(encoder_cfg)}
        self.dae = build_dae(net, _encoder_cfg(encoder_cfg, weights_loaded))
        self.schedule = DiffusionSchedule.from_config(cfg["diffusion"])
        self.shape = tuple(int(s) for s in cfg["shape"]) if cfg["shape"] else None
        self.signed = bool(cfg["signed"])
        self.ddim = ddim if isinstance(ddim, DDIMSettings) else DDIMSettings.from_config(ddim)
        self.seed = int(cfg["train"]["seed"])

    def pipeline(self):
        from ldae.models.pipelines import DAEPipeline

        pipe = DAEPipeline.__new__(DAEPipeline)  # no eval() switch: used inside training/validation
        pipe.dae, pipe.schedule, pipe.shape, pipe.signed = self.dae, self.schedule, self.shape, self.signed
        pipe.ddim = self.ddim
        return pipe

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
    def __init__(self, images: stage.ImageDataset, targets: list[float]):
        self.images, self.targets = images, [float(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {**self.images[i], "target": torch.tensor(self.targets[i], dtype=torch.float32)}


class SupervisedModule(stage.StepSeeding, pl.LightningModule):
    """``self.model``: semantic encoder + linear head, end-to-end on one task."""

    def __init__(self, cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], task: str,
                 weights_loaded: bool = False):
        super().__init__()
        from ldae.models import build_supervised_encoder

        if task not in TASKS:
            raise ValueError(f"unknown supervised task {task!r} ({', '.join(TASKS)})")
        self.cfg, self.task = dict(cfg), task
        self.model = build_supervised_encoder({"num_outputs": 1}, _encoder_cfg(encoder_cfg, weights_loaded))
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


# --------------------------------------------------------------------------------------------------- loading
def load_dae(weights: str | Path, cfg: str | Path | Mapping[str, Any], device: str | torch.device = "cpu",
             ddim=None):
    """The trained DAE as a :class:`ldae.models.pipelines.DAEPipeline` (eval mode, gradients off); ``ddim``
    (DDIMSettings or a ``ddim`` section): None -> the settings recorded at training (else the defaults)."""
    from ldae.models.pipelines import DAEPipeline

    data = stage.read_stage_config(cfg)
    module = DAEModule(data["config"], data["encoder"], weights_loaded=True,
                       ddim=ddim if ddim is not None else data.get("ddim"))
    sd = common.load_weights(weights, "DAE", "models/dae/weights.pt")
    own = {k[len("dae."):]: v for k, v in sd.items() if k.startswith("dae.")}
    module.dae.load_state_dict(own, strict=True)
    module.dae.requires_grad_(False).eval().to(device)
    return DAEPipeline(module.dae, module.schedule, module.shape, module.signed, module.ddim)


def load_supervised(weights: str | Path, cfg: str | Path | Mapping[str, Any], device: str | torch.device = "cpu"):
    """The trained supervised encoder (``SupervisedEncoder``; ``.encoder`` gives the features), eval mode."""
    data = stage.read_stage_config(cfg)
    module = SupervisedModule(data["config"], data["encoder"], data["task"], weights_loaded=True)
    sd = common.load_weights(weights, "supervised encoder", f"models/supervised_{data['task']}/weights.pt")
    module.model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")},
                                 strict=True)
    return module.model.requires_grad_(False).eval().to(device)


# ------------------------------------------------------------------------------------------------------ CLI
def _build(module_factory):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = module_factory()
    messages = [str(w.message) for w in caught if "not found" in str(w.message)]
    for message in messages:
        stage.log.warning(message)
    return module, messages


def _fit_and_publish(args, module, resolved, train_ds, val_ds, settings, run_dir, monitor, mode, ema, prefix,
                     summary_extra):
    common.save_resolved_config(resolved, run_dir)
    trainer = common.build_trainer(settings, run_dir, monitor=monitor if val_ds is not None else None, mode=mode,
                                   ema_decay=ema or None, callbacks=[stage.SaveLastAtEnd(run_dir)])
    started = time.time()
    trainer.fit(module, stage.loader(train_ds, settings, shuffle=True),
                stage.loader(val_ds, settings, shuffle=False) if val_ds is not None else None,
                ckpt_path=common.resume_checkpoint(run_dir), weights_only=True)
    if not trainer.is_global_zero:
        return 0
    source, best_score = stage.selected_checkpoint(trainer, run_dir, monitor)
    weights = {f"{prefix}{k}": v for k, v in stage.checkpoint_state(source, prefix).items()}
    summary = {"selected_checkpoint": source.name, f"best_{monitor.replace('/', '_')}": best_score,
               "global_step": trainer.global_step, "epochs": trainer.current_epoch,
               "seconds_this_run": round(time.time() - started, 1), **summary_extra}
    stage.publish(args.out_dir, run_dir, weights, resolved, summary)
    return 0


def main_dae(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-dae", "baseline: voxel-space diffusion autoencoder (DiffAE-style)")
    parser.add_argument("--encoder", default="", help="the LDAE's encoder section (ldae.encoder), JSON/YAML")
    parser.add_argument("--ddim", default="", help="the `ddim` config section (validation sampler), JSON/YAML")
    args = parser.parse_args(argv)
    stage.setup_process(args.threads)
    from ldae.diffusion import DDIMSettings
    from ldae.models import count_parameters

    cfg = stage.resolve_config(DAE_DEFAULTS, stage.parse_config_arg(args.config), "dae")
    enc = resolve_encoder(stage.parse_config_arg(args.encoder), cfg["encoder"])
    images = stage.parse_config_arg(args.images)
    ddim = DDIMSettings.from_config(stage.parse_config_arg(args.ddim))
    settings, run_dir = stage.run_settings(args, cfg)
    table = stage.image_table(args)
    train, val = table[table.split == "train"], table[table.split == "val"]
    if cfg["val_max_sessions"]:
        val = val.iloc[: int(cfg["val_max_sessions"])]
    if train.empty:
        raise SystemExit("train-dae: no training session")
    files = [args.qc, args.sessions, args.splits, *table.image]
    stamp = stage.fingerprint({"dae": cfg, "encoder": enc, "images": images, "ddim": ddim.as_config()}, files)
    resumed = stage.prepare_run_dir(run_dir, stamp)
    pl.seed_everything(settings["seed"], workers=True)
    module, messages = _build(lambda: DAEModule(cfg, enc, ddim=ddim))
    resolved = {"stage": "dae", "config": cfg, "encoder": enc, "images": images, "ddim": ddim.as_config(),
                "warnings": messages}
    cache_dir = run_dir / "cache"
    train_ds = stage.ImageDataset(train.image.tolist(), images, cfg["cache"], cache_dir)
    val_ds = stage.ImageDataset(val.image.tolist(), images, cfg["cache"], cache_dir) if len(val) else None
    n_enc, n_all = count_parameters(module.dae.encoder), count_parameters(module.dae)
    extra = {"stage": "dae", "resumed": resumed, "n_train": len(train), "n_val": len(val), "warnings": messages,
             "parameters": {"semantic_encoder": n_enc, "unet": n_all - n_enc, "total": n_all,
                            "total_millions": round(n_all / 1e6, 1), "paper": "130M (paper, Table 5)"}}
    return _fit_and_publish(args, module, resolved, train_ds, val_ds, settings, run_dir, "val/ssim", "max",
                            cfg["ema_decay"], "dae.", extra)


def main_supervised(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("train-supervised", "baseline: the semantic encoder + linear head, end-to-end")
    parser.add_argument("--encoder", default="", help="the LDAE's encoder section (ldae.encoder), JSON/YAML")
    parser.add_argument("--task", required=True, choices=TASKS, help="ad: AD vs CN (BCE); age: regression (MSE)")
    args = parser.parse_args(argv)
    stage.setup_process(args.threads)
    from ldae.models import count_parameters

    cfg = stage.resolve_config(SUPERVISED_DEFAULTS, stage.parse_config_arg(args.config), "supervised")
    enc = resolve_encoder(stage.parse_config_arg(args.encoder), cfg["encoder"])
    images = stage.parse_config_arg(args.images)
    settings, run_dir = stage.run_settings(args, cfg)
    table = stage.image_table(args)
    rows, targets = supervised_targets(table, args.task)
    rows = rows.assign(target=targets)
    train = rows[(rows.split == "train") & (rows.probe_split == "probe_train")]
    val = rows[(rows.split == "train") & (rows.probe_split == "probe_val")]
    untrainable = None
    if train.empty:
        untrainable = f"no probe_train session for task {args.task}"
    elif args.task == "ad" and train.target.nunique() < 2:
        untrainable = "probe_train holds a single diagnosis (AD or CN)"
    if untrainable:  # a tiny cohort: publish the untrained model, say so (its probe rows are n/a anyway)
        stage.log.warning("train-supervised: %s: the model is NOT trained", untrainable)
        pl.seed_everything(settings["seed"], workers=True)
        module, messages = _build(lambda: SupervisedModule(cfg, enc, args.task))
        resolved = {"stage": "supervised", "task": args.task, "config": cfg, "encoder": enc, "images": images,
                    "target": {"mean": 0.0, "std": 1.0}, "warnings": [*messages, untrainable]}
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stage.publish(args.out_dir, run_dir, {f"model.{k}": v for k, v in module.model.state_dict().items()},
                      resolved, {"stage": "supervised", "task": args.task, "trained": False, "reason": untrainable})
        return 0
    stats = {"mean": 0.0, "std": 1.0}
    if args.task == "age":  # z-score the target with the TRAINING statistics only
        stats = {"mean": float(train.target.mean()), "std": float(train.target.std(ddof=0)) or 1.0}
    norm = [(t - stats["mean"]) / stats["std"] for t in train.target]
    norm_val = [(t - stats["mean"]) / stats["std"] for t in val.target]
    files = [args.qc, args.sessions, args.splits, *rows.image]
    stamp = stage.fingerprint({"supervised": cfg, "encoder": enc, "images": images, "task": args.task}, files)
    resumed = stage.prepare_run_dir(run_dir, stamp)
    pl.seed_everything(settings["seed"], workers=True)
    module, messages = _build(lambda: SupervisedModule(cfg, enc, args.task))
    resolved = {"stage": "supervised", "task": args.task, "config": cfg, "encoder": enc, "images": images,
                "target": stats, "warnings": messages}
    cache_dir = run_dir / "cache"
    train_ds = TargetDataset(stage.ImageDataset(train.image.tolist(), images, cfg["cache"], cache_dir), norm)
    val_ds = (TargetDataset(stage.ImageDataset(val.image.tolist(), images, cfg["cache"], cache_dir), norm_val)
              if len(val) else None)
    n = count_parameters(module.model)
    extra = {"stage": "supervised", "task": args.task, "resumed": resumed, "n_train": len(train),
             "n_val": len(val), "target": stats, "warnings": messages,
             "parameters": {"total": n, "total_millions": round(n / 1e6, 1)}}
    return _fit_and_publish(args, module, resolved, train_ds, val_ds, settings, run_dir, "val/loss", "min", None,
                            "model.", extra)


def main(argv: list[str] | None = None) -> int:
    """Entry of both verbs (the CLI maps a verb to a module's ``main``): ``train-supervised`` always passes
    ``--task``, ``train-dae`` never does."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--task" or a.startswith("--task=") for a in argv):
        return main_supervised(argv)
    return main_dae(argv)
