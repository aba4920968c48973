"""Run an `ldae` training verb with a recording callback in its Trainer (tests/test_ddp.py).

    python tests/ddp_probe.py <verb> <verb arguments...>     # env LDAE_PROBE_DIR: where each rank writes

Lightning's DDP launcher restarts this same command line for every rank > 0, so every process of the run is
probed. Each rank writes ``rank<r>.json`` in ``$LDAE_PROBE_DIR``: world size, the sample ids (``index``/``row``)
of every training and validation batch by epoch, the validation metrics it saw after each epoch, its final
best-checkpoint choice, a digest of the frozen stage-2 LDM (stage 3), and whether it published the outputs.
``LDAE_PROBE_KILL_AT_STEP=k``: once a checkpoint at step >= k exists, rank 0 kills the whole process group with
SIGKILL at the next batch (a job killed by the cluster; no Python cleanup, no final checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from ldae import cli
from ldae.training import common, stage

PROBE_DIR = Path(os.environ.get("LDAE_PROBE_DIR", "."))
KILL_AT = int(os.environ.get("LDAE_PROBE_KILL_AT_STEP", "0"))
RECORD: dict = {"train": {}, "val": {}, "epochs": [], "published": False}


def sample_ids(batch) -> list[int]:
    ids = batch["index"] if "index" in batch else batch["row"]
    return [int(i) for i in ids]


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write() -> None:
    PROBE_DIR.mkdir(parents=True, exist_ok=True)
    path = PROBE_DIR / f"rank{RECORD.get('rank', os.environ.get('LOCAL_RANK', 0))}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(RECORD, indent=1))
    os.replace(tmp, path)


class Probe(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        RECORD.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            pid=os.getpid(),
            threads=torch.get_num_threads(),
            accelerator=type(trainer.accelerator).__name__,
        )
        write()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if KILL_AT and trainer.global_step >= KILL_AT and trainer.is_global_zero and last.is_file():
            write()
            os.killpg(os.getpgrp(), signal.SIGKILL)
        RECORD["train"].setdefault(str(trainer.current_epoch), []).append(sample_ids(batch))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        RECORD["val"].setdefault(str(trainer.current_epoch), []).append(sample_ids(batch))

    def on_train_epoch_end(self, trainer, pl_module):  # after validation, before the checkpoint callbacks
        RECORD["epochs"].append(
            {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            }
        )
        write()

    def on_train_end(self, trainer, pl_module):
        best = [cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)]
        if best:
            score = best[0].best_model_score
            RECORD["best"] = {"score": None if score is None else float(score), "path": best[0].best_model_path}
        RECORD["global_step"] = trainer.global_step
        if hasattr(pl_module, "estimator"):
            RECORD["frozen_ldm"] = digest(pl_module.estimator.ldm.state_dict())
        write()


def main() -> int:
    build_trainer, publish = common.build_trainer, stage.publish_run

    def probed_trainer(*args, callbacks=(), **kwargs):
        return build_trainer(*args, callbacks=[*callbacks, Probe()], **kwargs)

    def probed_publish(*args, **kwargs):
        RECORD["published"] = True
        write()
        return publish(*args, **kwargs)

    common.build_trainer, stage.publish_run = probed_trainer, probed_publish
    code = cli.main(sys.argv[1:])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    RECORD["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    write()
    return code


if __name__ == "__main__":
    sys.exit(main())
