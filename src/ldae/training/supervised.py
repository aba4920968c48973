"""`ldae train-supervised`: the supervised-encoder baseline of Tables 5-7.

The LDAE's semantic encoder + one linear head trained end-to-end on the label, one model per task: ``ad`` (AD vs
CN, BCE, label CN = 1 as the probes) and ``age`` (MSE on the age z-scored with the training statistics). Trained on
probe_train, selected (lowest validation loss) on probe_val - the probes' splits, so Table 7 compares like with
like; the test split is never seen. Outputs: see :mod:`ldae.training.baselines`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ldae import verbs
from ldae.data.images import ImageDataset, records_of
from ldae.training import stage
from ldae.training.baselines import baseline_parser, image_datasets, resolve_encoder

TASKS = ("ad", "age")


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
        return torch.optim.Adam(
            self.model.parameters(), lr=float(self.cfg["lr"]), weight_decay=float(self.cfg["weight_decay"])
        )

    def _step(self, batch, name: str):
        out = self.model(batch["image"])[:, 0]
        loss = self.loss_fn(out, batch["target"])
        n = batch["target"].shape[0]
        self.log(
            f"{name}/loss", loss, prog_bar=True, on_step=name == "train", on_epoch=True, batch_size=n, sync_dist=True
        )
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


def untrainable_reason(train, task: str) -> str | None:
    if train.empty:
        return f"no probe_train session for task {task}"
    if task == "ad" and train.target.nunique() < 2:
        return "probe_train holds a single diagnosis (AD or CN)"
    return None


def main(argv: list[str] | None = None) -> int:
    """``ldae train-supervised``."""
    parser = baseline_parser("train-supervised", "baseline: the semantic encoder + linear head, end-to-end")
    parser.add_argument("--task", required=True, choices=TASKS, help="ad: AD vs CN (BCE); age: regression (MSE)")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    from ldae.models import count_parameters

    cfg = verbs.section("supervised", args.config)
    enc = resolve_encoder(args.encoder, cfg["encoder"])
    images = verbs.parse_config_arg(args.images)
    run = stage.Run.of(args, cfg)
    table = records_of(args)
    rows, targets = supervised_targets(table, args.task)
    rows = rows.assign(target=targets)
    train = rows[(rows.split == "train") & (rows.probe_split == "probe_train")]
    val = rows[(rows.split == "train") & (rows.probe_split == "probe_val")]

    def module_and_config(target: dict[str, float], notes: list[str]):
        """The module, the warnings of its construction and the run's resolved config."""
        module, messages = stage.build_quietly(lambda: SupervisedModule(cfg, enc, args.task))
        resolved = {
            "stage": "supervised",
            "task": args.task,
            "config": cfg,
            "encoder": enc,
            "images": images,
            "target": target,
            "warnings": [*messages, *notes],
        }
        return module, messages, resolved

    stats = {"mean": 0.0, "std": 1.0}
    untrainable = untrainable_reason(train, args.task)
    if untrainable:  # a tiny cohort: publish the untrained model, say so (its probe rows are n/a anyway)
        stage.log.warning("train-supervised: %s: the model is NOT trained", untrainable)
        pl.seed_everything(run.settings["seed"], workers=True)
        module, _, resolved = module_and_config(stats, [untrainable])
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        stage.publish_run(
            run.out_dir,
            run.run_dir,
            {f"model.{k}": v for k, v in module.model.state_dict().items()},
            resolved,
            {"stage": "supervised", "task": args.task, "trained": False, "reason": untrainable},
        )
        return 0
    if args.task == "age":  # z-score the target with the TRAINING statistics only
        stats = {"mean": float(train.target.mean()), "std": float(train.target.std(ddof=0)) or 1.0}
    files = [args.qc, args.sessions, args.splits, *rows.image]
    stamp = stage.fingerprint({"supervised": cfg, "encoder": enc, "images": images, "task": args.task}, files)
    resumed = run.start(stamp)
    module, messages, resolved = module_and_config(stats, [])
    train_images, val_images = image_datasets(train, val, images, cfg, run.run_dir)
    train_ds = TargetDataset(train_images, [(t - stats["mean"]) / stats["std"] for t in train.target])
    val_ds = (
        TargetDataset(val_images, [(t - stats["mean"]) / stats["std"] for t in val.target])
        if val_images is not None
        else None
    )
    n = count_parameters(module.model)
    extra = {
        "task": args.task,
        "resumed": resumed,
        "n_train": len(train),
        "n_val": len(val),
        "target": stats,
        "warnings": messages,
        "parameters": {"total": n, "total_millions": round(n / 1e6, 1)},
    }
    weights = partial(stage.prefixed_state, prefix="model.")
    selection = stage.Selection("val/loss", "min")
    return stage.fit_and_publish(run, module, resolved, train_ds, val_ds, weights, extra, selection)
