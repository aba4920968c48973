"""Training machinery shared by the three stages: Trainer, checkpoints, resume, EMA, logging, run folder.

A run folder holds everything of one stage:
    <run>/config.yaml          the resolved stage config it was trained with
    <run>/checkpoints/last.ckpt  written every `checkpoint_every_n_steps` and at the end (resume point)
    <run>/checkpoints/best.ckpt  best validation metric (stages with model selection)
    <run>/logs/metrics.csv     CSV log (TensorBoard too, when installed)
The published model folder (weights.pt, ...) is :func:`ldae.training.stage.fit_and_publish`'s (ldae.models.io).
A restarted rule (SLURM timeout, requeue, crash) resumes from the newest of last.ckpt and Lightning's
hpc_ckpt_*.ckpt with the optimizer, scheduler, EMA and loop state, so no step is trained twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ldae import verbs
from ldae.files import atomic_output

log = logging.getLogger("ldae.training")


def train_settings(section: dict) -> dict[str, Any]:
    """A stage's resolved `train:` sub-section (every key the schema lists for it) + ``devices`` (default auto: the
    rule passes its `gpus` resource); an unknown or missing key is an error naming it."""
    from ldae.verbs import schema_defaults

    known = set(schema_defaults("ldm.train"))  # the same keys in every stage's `train:`
    unknown = sorted(set(section) - known - {"devices"})
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown}; known: {sorted(known)}")
    missing = sorted(known - set(section))
    if missing:
        raise ValueError(f"training key(s) {missing} missing (resolve the stage section with ldae.verbs.section)")
    return {"devices": "auto", **section}


def accelerator_and_devices(devices, cpu_processes: int = 1) -> tuple[str, Any]:
    """(accelerator, processes): the rule's GPUs when CUDA is visible, else ``cpu_processes`` CPU processes."""
    if not torch.cuda.is_available():
        processes = int(cpu_processes or 1)
        if processes < 1:
            raise ValueError(f"train.cpu_processes must be >= 1, got {cpu_processes}")
        return "cpu", processes
    if devices in ("auto", None, 0):
        return "gpu", torch.cuda.device_count()
    return "gpu", int(devices)


def resume_checkpoint(run_dir: Path) -> str | None:
    """The newest resumable checkpoint of a run folder, or None for a fresh start."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [path for path in candidates if path.is_file()]
    if not existing:
        return None
    newest = max(existing, key=lambda path: path.stat().st_mtime)
    log.info("resuming from %s", newest)
    return str(newest)


def save_resolved_config(config: dict, run_dir: Path) -> None:
    """The resolved config the run trains with (``<run>/config.yaml``, as in the published model folder)."""
    from ldae.models.io import save_config

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)


def _keep_earlier_csv(run_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv: a resumed run first moves it to metrics-<k>.csv
    (publish_metrics joins the parts). Only the rank-0 process (DDP workers start later with the same argv)."""
    if os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return
    current = Path(run_dir) / "logs" / "metrics.csv"
    if current.is_file() and current.stat().st_size > 0:
        k = len(list(current.parent.glob("metrics-*.csv")))
        os.replace(current, current.parent / f"metrics-{k:03d}.csv")


def loggers(run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    _keep_earlier_csv(run_dir)
    active = [CSVLogger(save_dir=str(run_dir), name="", version="logs")]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        active.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard"))
    return active


def ema_callback(decay: float):
    """Lightning weight averaging with the EMA update ``decay * ema + (1 - decay) * w`` (as EMAWeightAveraging,
    every optimizer step), except that a tensor equal to its average is left bit-identical: frozen parts (the
    stage-2 LDM inside stage 3) and constant buffers never drift by float round-off."""
    from lightning.pytorch.callbacks import WeightAveraging

    @torch.no_grad()
    def ema_update(ema_param, current_param, num_averaged):
        if torch.equal(ema_param, current_param):
            return ema_param
        return decay * ema_param + (1 - decay) * current_param

    return WeightAveraging(avg_fn=ema_update)


def cpu_layout_callback():
    """Converts the module's 3-D convolution weights to the CPU's fast channels-last-3d layout at ``setup``, i.e.
    before DDP wraps the module (DDP's gradient buckets follow the layout the weights have at that point; the
    modules' own conversion at ``on_fit_start`` comes after it and would leave every bucket copy strided)."""
    import lightning.pytorch as pl

    class CpuLayout(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            from ldae.training.stage import cpu_channels_last_

            cpu_channels_last_(pl_module)

    return CpuLayout()


def cluster_plugins(processes: int) -> list:
    """Lightning's cluster environment for this job.

    In a SLURM job with as many tasks as processes (srun started them): SLURMEnvironment, which also requeues
    the job on SIGUSR1. A multi-GPU stage in a ONE-task SLURM job (what the slurm profile submits: one task,
    N GPUs) needs Lightning to start the other ranks itself; SLURMEnvironment would refuse (`devices=2` vs
    `--ntasks-per-node=1`), so LightningEnvironment (subprocess launcher) is used and a time limit or
    preemption is handled by the profile's retries/requeue resuming from last.ckpt."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_NTASKS") or "1"
    try:
        tasks = int(str(tasks).split("(")[0])
    except ValueError:
        tasks = 1
    if processes > 1 and tasks < processes:
        return [LightningEnvironment()]
    return [SLURMEnvironment(auto_requeue=True)]


def build_trainer(
    settings: dict[str, Any],
    run_dir: Path,
    monitor: str | None = None,
    mode: str = "max",
    ema_decay: float | None = None,
    callbacks: Iterable = (),
    enable_progress_bar: bool = True,
    find_unused_parameters: bool = False,
):
    """A Lightning Trainer with last/best checkpoints, optional EMA, SLURM requeue, DDP for >1 GPU (or for
    ``cpu_processes`` > 1 on a machine without GPUs: gloo backend, the CPU threads split between the processes).

    ``find_unused_parameters``: DDP for modules whose backward passes touch only some parameters (stage 1's
    manual generator/discriminator optimisation). Under DDP every process runs the verb (Lightning restarts the
    command line for the other ranks); the stage loaders (:func:`ldae.training.stage.loader`) shard the data."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    class _StepCheckpoint(ModelCheckpoint):
        """``last.ckpt`` every N steps and at epoch ends, but not at ``on_train_end``: there Lightning (>= 2.6)
        would write it AFTER the EMA callback has copied the averaged weights into the model, losing the raw
        weights a resumed run needs; the final ``last.ckpt`` is :class:`ldae.training.stage.SaveLastAtEnd`'s."""

        def on_train_end(self, trainer, pl_module):
            pass

        @property
        def state_key(self) -> str:  # the key of a plain ModelCheckpoint: checkpoints of earlier runs resume
            return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    accelerator, devices = accelerator_and_devices(settings["devices"], settings["cpu_processes"])
    every = _StepCheckpoint(
        dirpath=run_dir / "checkpoints",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=settings["checkpoint_every_n_steps"],
    )
    all_callbacks = [cpu_layout_callback()] if accelerator == "cpu" else []
    all_callbacks += [every, *callbacks]
    if monitor:
        all_callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                save_last=False,
                enable_version_counter=False,
            )
        )
    if ema_decay:
        all_callbacks.append(ema_callback(ema_decay))
    multi = devices > 1
    if multi and accelerator == "cpu":  # each process gets its share of the job's threads
        torch.set_num_threads(max(1, torch.get_num_threads() // devices))
    plugins = cluster_plugins(devices if multi else 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        return pl.Trainer(
            default_root_dir=str(run_dir),
            accelerator=accelerator,
            devices=devices,
            strategy=("ddp_find_unused_parameters_true" if find_unused_parameters else "ddp") if multi else "auto",
            precision=verbs.resolve_precision(settings["precision"]),
            max_epochs=settings["max_epochs"],
            max_steps=settings["max_steps"],
            accumulate_grad_batches=settings["accumulate_grad_batches"],
            gradient_clip_val=settings["gradient_clip_val"],
            check_val_every_n_epoch=settings["val_every_n_epochs"],
            log_every_n_steps=settings["log_every_n_steps"],
            callbacks=all_callbacks,
            logger=loggers(run_dir),
            plugins=plugins,
            enable_progress_bar=enable_progress_bar,
            num_sanity_val_steps=0,
            deterministic=False,
        )


def publish_metrics(run_dir: Path, target: Path) -> None:
    """Copy the CSV log (all parts of a resumed run, in order) to the stage's declared metrics file (atomic)."""
    logs = Path(run_dir) / "logs"
    parts = [*sorted(logs.glob("metrics-*.csv")), logs / "metrics.csv"]
    parts = [part for part in parts if part.is_file() and part.stat().st_size > 0]
    with atomic_output(target) as tmp:
        if len(parts) == 1:
            shutil.copyfile(parts[0], tmp)
        elif parts:
            import pandas as pd

            pd.concat([pd.read_csv(part) for part in parts], ignore_index=True).to_csv(tmp, index=False)
        else:
            Path(tmp).write_text("")
