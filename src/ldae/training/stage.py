"""What the training verbs share beyond :mod:`ldae.training.common` (the Lightning Trainer): one verb's run.

* the command line every training verb accepts (:func:`stage_parser`; config sections: :func:`ldae.verbs.section`);
* the run folder's input fingerprint (:func:`prepare_run_dir`): a restarted rule resumes only when its inputs are
  the files the saved state was built from, otherwise it starts afresh;
* SSIM as the paper's code computes it (:func:`ssim_3d`);
* per-step reseeding (:class:`StepSeeding`), so a resumed run draws the same noise, timesteps, dropout masks and
  data order as an uninterrupted one;
* the loaders (:func:`loader`): samplers that split the data between DDP ranks (training: a (seed, epoch)
  permutation; validation: every session once), and a training loader whose position is checkpointed, so a run
  resumes in the middle of an epoch with the next batch (:class:`ResumableLoader`);
* :func:`fit_and_publish`: fit, select the checkpoint and publish the model folder (:func:`ldae.models.io.publish`),
  the tail every training verb shares (each verb's ``main`` only prepares its data and module).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldae import files, verbs
from ldae.models import io
from ldae.training import common

log = logging.getLogger("ldae.training")


# ------------------------------------------------------------------------------------------- command line
def stage_parser(verb: str, description: str, images: bool = True) -> argparse.ArgumentParser:
    parser = verbs.parser(verb, description)
    parser.add_argument("--out-dir", required=True, type=Path, help="the rule's declared output folder (model folder)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="resumable run folder (Lightning checkpoints, logs); default <out-dir>/run",
    )
    parser.add_argument("--devices", default="auto", help="GPUs for this job (the rule's gpus resource)")
    if images:
        verbs.add_table_args(parser)
    return parser


def devices_arg(value: str | int | None):
    if value in (None, "", "auto"):
        return "auto"
    return int(value)


@dataclass(frozen=True)
class Run:
    """One training verb's run: its Trainer settings (the section's `train:` block + the rule's GPU count), its
    resumable run folder and the model folder it publishes."""

    settings: dict[str, Any]
    run_dir: Path
    out_dir: Path

    @classmethod
    def of(cls, args: argparse.Namespace, cfg: Mapping[str, Any]) -> Run:
        settings = common.train_settings({**cfg["train"], "devices": devices_arg(args.devices)})
        return cls(settings, Path(args.run_dir or Path(args.out_dir) / "run"), Path(args.out_dir))

    def start(self, stamp: Mapping[str, Any]) -> bool:
        """Ready the run folder for the inputs ``stamp`` (:func:`prepare_run_dir`) and seed everything; returns
        True when earlier state is kept (the run resumes)."""
        import lightning.pytorch as pl

        resumed = prepare_run_dir(self.run_dir, stamp)
        pl.seed_everything(self.settings["seed"], workers=True)
        return resumed


@dataclass(frozen=True)
class Selection:
    """Which checkpoint a stage publishes: the best on ``monitor`` (``mode``) when there is a validation split and a
    monitor, else the last; ``ema_decay``: the weights' EMA (None or 0: off)."""

    monitor: str | None = None
    mode: str = "max"
    ema_decay: float | None = None


def is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") in ("", "0") and os.environ.get("RANK", "0") in ("", "0")


# --------------------------------------------------------------------------------------------- run folder
def file_stamp(path: str | os.PathLike) -> list:
    """Identity of an input file for the fingerprint: size and modification time (cheap for 10k images)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def fingerprint(config: Mapping[str, Any], files: Iterable[str | os.PathLike]) -> dict[str, Any]:
    stamps = {str(Path(p).resolve()): file_stamp(p) for p in files}
    digest = hashlib.sha1(json.dumps(stamps, sort_keys=True).encode()).hexdigest()
    config_digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return {"config": config_digest, "inputs": digest, "n_files": len(stamps)}


def prepare_run_dir(run_dir: Path, stamp: Mapping[str, Any]) -> bool:
    """Make ``run_dir`` safe to resume: its saved state must come from the same config and input files.

    Returns True if earlier state is kept (a restarted rule resumes), False for a fresh start. State built from
    other inputs (an upstream rule reran, a table changed) is deleted with a warning. Only the rank-0 process acts.
    """
    run_dir = Path(run_dir)
    state_file = run_dir / "inputs.json"
    if not is_rank_zero():
        return (run_dir / "checkpoints").is_dir()
    old = json.loads(state_file.read_text()) if state_file.is_file() else None
    has_state = any((run_dir / name).exists() for name in ("checkpoints", "logs", "cache"))
    if has_state and old != dict(stamp):
        log.warning("run folder %s holds state of other inputs or config: starting afresh", run_dir)
        for name in ("checkpoints", "logs", "cache", "tensorboard"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for path in run_dir.glob("hpc_ckpt_*.ckpt"):
            path.unlink()
        has_state = False
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(state_file, json.dumps(dict(stamp), indent=2))
    return has_state


# ------------------------------------------------------------------------------------------------ loaders
def process_group() -> tuple[int, int]:
    """(rank, world size) of the running DDP process group; (0, 1) in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _ShardSampler(torch.utils.data.DistributedSampler):
    """A sampler that splits the data between DDP ranks itself, reading rank and world size when it is iterated
    (the process group exists only inside ``Trainer.fit``). Being a DistributedSampler, Lightning keeps it
    instead of installing its own."""

    def __init__(self, data_source, shuffle: bool, seed: int = 0):  # no super().__init__: it needs the group
        self.dataset = data_source
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.drop_last = False

    def indices(self) -> list[int]:
        raise NotImplementedError

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


class EpochRandomSampler(_ShardSampler):
    """Training order: a permutation that depends only on (seed, epoch) (Lightning calls ``set_epoch`` before
    every epoch), so a resumed run visits the data in the same order. Under DDP rank r takes positions
    r, r + W, ... of it (padded with its first items to a multiple of W, as torch's DistributedSampler does), so
    every rank sees its own 1/W of the data per epoch. :meth:`resume` skips what a checkpointed run had already
    trained on in its current epoch (see :class:`ResumableLoader`)."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source, shuffle=True, seed=seed)
        self._resume_at: tuple[int, int] | None = None

    def resume(self, epoch: int, samples_done: int) -> None:
        """The next iteration, if it is one of ``epoch``, starts after the rank's first ``samples_done`` samples."""
        self._resume_at = (int(epoch), int(samples_done))

    def shard(self) -> list[int]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(self.seed, 0, self.epoch))).tolist()
        rank, world = process_group()
        if world > 1:
            total = -(-n // world) * world
            order = (order * (total // max(n, 1) + 1))[:total]
            order = order[rank:total:world]
        return order

    def indices(self) -> list[int]:
        return self.shard()

    def __iter__(self):
        order = self.shard()
        if self._resume_at is not None:
            epoch, done = self._resume_at
            self._resume_at = None
            if epoch == self.epoch:
                order = order[done:]
        return iter(order)


class EvalSampler(_ShardSampler):
    """Validation order: sequential; under DDP rank r evaluates items r, r + W, ... once each (no padding
    duplicates, so the metrics reduced over the ranks are those of the whole split). A split smaller than the
    world gives the ranks past its end one repeated item each (every rank must run validation)."""

    def __init__(self, data_source):
        super().__init__(data_source, shuffle=False)

    def indices(self) -> list[int]:
        n = len(self.dataset)
        rank, world = process_group()
        if world == 1 or n == 0:
            return list(range(n))
        return list(range(rank, n, world)) if rank < n else [rank % max(n, 1)]


class ResumableLoader(torch.utils.data.DataLoader):
    """The training DataLoader: Lightning saves its :meth:`state_dict` (epoch and batches handed out this
    epoch) in every checkpoint and gives it back on resume, so a run stopped in the middle of an epoch continues
    with the next batch of the same order (with a plain loader Lightning would train the epoch's first batches
    again in place of the remaining ones). A state of another world size, batch size or data size is ignored
    (that epoch starts again)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._batches, self._start = 0, 0, 0

    def __iter__(self):  # a generator: runs at the first batch, after Lightning's set_epoch
        self._epoch, self._batches, self._start = self.sampler.epoch, self._start, 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def _layout(self) -> dict[str, int]:
        return {"world_size": process_group()[1], "batch_size": int(self.batch_size), "samples": len(self.dataset)}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches, **self._layout()}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if any(state.get(key) != value for key, value in self._layout().items()):
            log.warning(
                "checkpoint from another data layout (%s, now %s): its epoch restarts", dict(state), self._layout()
            )
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # stopped at an epoch's end: the next epoch starts afresh
            return
        self.sampler.resume(epoch, batches * int(self.batch_size))
        self._start = batches


def loader(dataset, settings: Mapping[str, Any], shuffle: bool, batch_size: int | None = None, drop_last=False):
    """Training (``shuffle``: :class:`EpochRandomSampler` in a :class:`ResumableLoader`) or validation
    (:class:`EvalSampler`) loader; both shard the data between DDP ranks."""
    workers = int(settings["num_workers"])
    sampler = EpochRandomSampler(dataset, settings["seed"]) if shuffle else EvalSampler(dataset)
    kind = ResumableLoader if shuffle else torch.utils.data.DataLoader
    return kind(
        dataset,
        batch_size=int(batch_size or settings["batch_size"]),
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )


# ------------------------------------------------------------------------------------------------ metrics
def ssim_3d(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample SSIM as the paper's code computes it: MONAI, 3-D, data range 1, Gaussian kernel 3, sigma 1.5,
    whole volume. Inputs (B, 1, X, Y, Z) in [0, 1] (clamped); returns (B,) float32."""
    from monai.metrics.regression import compute_ssim_and_cs

    p = prediction.detach().float().clamp(0, 1)
    t = target.detach().float().clamp(0, 1)
    ssim_map, _ = compute_ssim_and_cs(
        p,
        t,
        spatial_dims=3,
        kernel_size=(3, 3, 3),
        kernel_sigma=(1.5, 1.5, 1.5),
        data_range=1.0,
        kernel_type="gaussian",
        k1=0.01,
        k2=0.03,
    )
    return ssim_map.flatten(1).mean(1)


# ------------------------------------------------------------------------------------------ CPU layout
def cpu_channels_last_(module: torch.nn.Module) -> torch.nn.Module:
    """On CPU, 3-D convolutions (backward above all) run 2-3x faster in the channels-last-3d layout: convert the
    5-D weights of ``module`` in place when it lives on the CPU (no effect on GPUs, where cuDNN picks layouts)."""
    for param in module.parameters():
        if param.dim() == 5 and param.device.type == "cpu":
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return module


def cpu_fast(x: torch.Tensor) -> torch.Tensor:
    """A 5-D CPU batch in the channels-last-3d layout (see :func:`cpu_channels_last_`); other tensors unchanged."""
    if x.dim() == 5 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


# ------------------------------------------------------------------------------------------------ seeding
def _mix(*values: int) -> int:
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(digest[:7], "little")


class StepSeeding:
    """LightningModule mixin: reseed torch before every training batch (noise, timesteps, dropout masks) from
    (seed, epoch, batch, rank), so a run resumed from ``last.ckpt`` draws exactly what an uninterrupted run draws
    (the data order: :class:`EpochRandomSampler`). Needs ``self.seed``."""

    seed: int = 0

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        torch.manual_seed(_mix(self.seed, 2, self.current_epoch, batch_idx, self.global_rank))


def fixed_generator(seed: int, *keys: int, device=None) -> torch.Generator:
    """A generator for validation draws that must not change between epochs (e.g. one x_T per session)."""
    g = torch.Generator(device=device or "cpu")
    g.manual_seed(_mix(seed, 3, *keys))
    return g


class SaveLastAtEnd:
    """Callback factory: writes ``checkpoints/last.ckpt`` when training ends, BEFORE the EMA callback copies the
    averaged weights into the model (so the file holds raw + EMA weights and the exact final loop state)."""

    def __new__(cls, run_dir: Path):
        import lightning.pytorch as pl

        class _SaveLastAtEnd(pl.Callback):
            def on_train_end(self, trainer, pl_module):
                trainer.save_checkpoint(str(Path(run_dir) / "checkpoints" / "last.ckpt"))

        return _SaveLastAtEnd()


# ------------------------------------------------------------------------------------------------ outputs
def selected_checkpoint(trainer, run_dir: Path, monitor: str) -> tuple[Path, float | None]:
    """The checkpoint a stage publishes (best on `monitor` if there is one, else last) and the best score."""
    best = Path(run_dir) / "checkpoints" / "best.ckpt"
    source = best if best.is_file() else Path(run_dir) / "checkpoints" / "last.ckpt"
    scores = [
        float(cb.best_model_score)
        for cb in trainer.checkpoint_callbacks
        if getattr(cb, "monitor", None) == monitor and cb.best_model_score is not None
    ]
    return source, (scores[0] if scores else None)


def checkpoint_state(path: str | os.PathLike, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix`` of a Lightning checkpoint's ``state_dict`` (EMA weights when EMA was on)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # our own checkpoints: tensors + plain data
    state = ckpt["state_dict"]
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not found:
        raise ValueError(f"no weights under {prefix!r} in {path}")
    return found


def build_quietly(factory):
    """``factory()`` with the "weights not found" warnings (an absent optional init file) caught, logged and
    returned: ``(module, messages)`` (the messages go into config.yaml and summary.json)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = factory()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "not found" in str(w.message)]
    for message in messages:
        log.warning(message)
    return module, messages


def publish_run(
    out_dir: Path,
    run_dir: Path,
    weights: dict[str, torch.Tensor],
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
) -> None:
    """The run's model folder (:func:`ldae.models.io.publish`) with the run's CSV log as metrics.csv and its
    best.ckpt/last.ckpt hard-linked from the run folder (no extra disk)."""
    checkpoints = Path(run_dir) / "checkpoints"
    io.publish(out_dir, weights, config, summary, {name: checkpoints / name for name in ("best.ckpt", "last.ckpt")})
    common.publish_metrics(run_dir, Path(out_dir) / io.METRICS)


def prefixed_state(source: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` of a checkpoint, with the prefix kept."""
    return {f"{prefix}{k}": v for k, v in checkpoint_state(source, prefix).items()}


def fit_and_publish(
    run: Run,
    module,
    resolved: Mapping[str, Any],
    train_ds,
    val_ds,
    weights,
    summary: Mapping[str, Any],
    selection: Selection,
    trainer_settings: Mapping[str, Any] = (),
    find_unused_parameters: bool = False,
) -> int:
    """Train ``module`` (resuming the run folder's state), then publish the model folder ``run.out_dir``.

    ``weights(source) -> state dict``: what to publish of the checkpoint ``selection`` picks. ``summary``: the verb's
    own entries of summary.json; ``trainer_settings``: settings of the Trainer only (e.g. stage 1's manual
    optimisation)."""
    settings, run_dir, monitor = run.settings, run.run_dir, selection.monitor
    common.save_resolved_config(dict(resolved), run_dir)
    trainer = common.build_trainer(
        {**settings, **dict(trainer_settings)},
        run_dir,
        monitor=monitor if val_ds is not None else None,
        mode=selection.mode,
        ema_decay=selection.ema_decay or None,
        callbacks=[SaveLastAtEnd(run_dir)],
        find_unused_parameters=find_unused_parameters,
    )
    started = time.time()
    trainer.fit(
        module,
        loader(train_ds, settings, shuffle=True),
        loader(val_ds, settings, shuffle=False) if val_ds is not None else None,
        ckpt_path=common.resume_checkpoint(run_dir),
        weights_only=True,
    )
    if not trainer.is_global_zero:
        return 0
    if monitor:
        source, best_score = selected_checkpoint(trainer, run_dir, monitor)
        selected = {"selected_checkpoint": source.name, f"best_{monitor.replace('/', '_')}": best_score}
    else:  # no model selection: the final (EMA) weights
        source = Path(run_dir) / "checkpoints" / "last.ckpt"
        selected = {"selected_checkpoint": "last.ckpt (final EMA weights)"}
    out = {
        "stage": resolved["stage"],
        **selected,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        **dict(summary),
        "seconds_this_run": round(time.time() - started, 1),
    }
    publish_run(run.out_dir, run_dir, weights(source), resolved, out)
    return 0
