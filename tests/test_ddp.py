"""DDP training on the CPU: every training stage run by its verb with 2 processes (``train.cpu_processes: 2``,
gloo), as users run it on 2 GPUs, on a tiny cohort at the CI image grid with the CI networks.

Each run goes through tests/ddp_probe.py, which records what every rank did (see there). Checked per stage: both
ranks ran in one process group; per epoch each rank trained on its own half of the training sessions (disjoint,
together all of them), so the global step count is half of a single process's at the same per-process batch;
validation evaluated every session once over the ranks and the reduced metrics and best checkpoint are the same on
both ranks; only rank 0 published, and the published weights are the selected checkpoint's. Stage 3: the frozen
stage-2 LDM is bit-identical on both ranks after training. A stage-3 run killed (SIGKILL, whole process group) in
the middle of an epoch right after a checkpoint resumes to the same step, data order and weights as an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.cohort import cohort_args
from helpers.config import ci_config

pytestmark = [
    pytest.mark.slow,  # 2-process training runs: make test, not make test-fast
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="torch without the gloo backend",
    ),
]

PROBE = Path(__file__).parent / "ddp_probe.py"
PROCESSES = 2
BATCH = 2
EPOCHS = 2
N_TRAIN, N_VAL = 8, 5  # the ci_cohort fixture: with batch 2, rank 0 validates 2 batches, rank 1 one
TRAIN = {
    "max_epochs": EPOCHS,
    "max_steps": -1,
    "batch_size": BATCH,
    "accumulate_grad_batches": 1,
    "num_workers": 0,
    "checkpoint_every_n_steps": 3,
    "log_every_n_steps": 1,
    "val_every_n_epochs": 1,
}
KILL_AT_STEP = 3  # stage 3: 2 steps an epoch -> the checkpoint at step 3 is in the middle of epoch 1


def stage_config(section: str, processes: int = PROCESSES, **over) -> dict:
    """The CI config's section (networks, caches, DDIM steps) with a 2-epoch, 2-process training block."""
    cfg = {**ci_config()[section], **over}
    cfg["train"] = {**cfg["train"], **TRAIN, "cpu_processes": processes}
    return cfg


def clean_env(probe_dir: Path, kill_at: int = 0) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_")
        and k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")
    }
    env.update(
        CUDA_VISIBLE_DEVICES="",
        LDAE_PROBE_DIR=str(probe_dir),
        LDAE_PROBE_KILL_AT_STEP=str(kill_at),
        PYTHONWARNINGS="ignore",
    )
    return env


def run_verb(root: Path, name: str, argv: list, kill_at: int = 0) -> tuple[int, dict[int, dict]]:
    """`python tests/ddp_probe.py <verb> ...` in its own process group; returns its exit code and the rank
    records."""
    probe_dir = root / "probe" / name
    log = root / f"{name}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, str(PROBE), *map(str, argv), "--devices", "0", "--threads", "2"],
            env=clean_env(probe_dir, kill_at),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{name}: no result in 10 minutes (a DDP hang?); log {log}")
    if code != 0 and not kill_at:
        pytest.fail(f"{name} failed ({code}):\n{log.read_text()[-4000:]}")
    records = {int(p.stem[4:]): json.loads(p.read_text()) for p in probe_dir.glob("rank*.json")}
    return code, records


def models(root: Path) -> Path:
    return root / "models"


def ldae_argv(root: Path, out: Path, run: Path) -> list:
    m = models(root)
    return [
        "train-ldae",
        *cohort_args(root),
        "--config",
        json.dumps(stage_config("ldae")),
        "--latents",
        m / "latents",
        "--ldm",
        m / "ldm",
        "--autoencoder",
        m / "autoencoder",
        "--out-dir",
        out,
        "--run-dir",
        run,
    ]


@pytest.fixture(scope="module")
def runs(ci_cohort):
    """The four stages under DDP (stage 1 -> latents -> 2 -> 3, and the DAE baseline), plus a 1-process LDM."""
    from ldae import cli

    root, m = ci_cohort, models(ci_cohort)
    out = {}
    out["autoencoder"] = run_verb(
        root,
        "autoencoder",
        [
            "train-autoencoder",
            *cohort_args(root),
            "--config",
            json.dumps(stage_config("autoencoder")),
            "--out-dir",
            m / "autoencoder",
            "--run-dir",
            root / "run/autoencoder",
        ],
    )
    assert (
        cli.main(
            [
                "encode-latents",
                *cohort_args(root),
                "--config",
                json.dumps({"num_workers": 0}),
                "--autoencoder",
                str(m / "autoencoder"),
                "--out-dir",
                str(m / "latents"),
                "--devices",
                "0",
            ]
        )
        == 0
    )
    for name, processes in (("ldm", PROCESSES), ("ldm_1process", 1)):
        out[name] = run_verb(
            root,
            name,
            [
                "train-ldm",
                "--latents",
                m / "latents",
                "--config",
                json.dumps(stage_config("ldm", processes)),
                "--out-dir",
                m / name,
                "--run-dir",
                root / "run" / name,
            ],
        )
    out["ldae"] = run_verb(root, "ldae", ldae_argv(root, m / "ldae", root / "run/ldae"))
    out["dae"] = run_verb(
        root,
        "dae",
        [
            "train-dae",
            *cohort_args(root),
            "--config",
            json.dumps(stage_config("dae", val_max_sessions=0)),
            "--encoder",
            json.dumps(ci_config()["ldae"]["encoder"]),
            "--out-dir",
            m / "dae",
            "--run-dir",
            root / "run/dae",
        ],
    )
    return root, out


def steps_per_epoch(processes: int) -> int:
    return -(-N_TRAIN // (processes * BATCH))


def check_ranks(records: dict[int, dict], global_step: int, has_val: bool = True) -> None:
    """Both ranks in one group of 2; disjoint training halves per epoch; every validation session once;
    identical reduced validation metrics and best checkpoint; only rank 0 published."""
    assert sorted(records) == [0, 1], records.keys()
    r0, r1 = records[0], records[1]
    assert r0["world_size"] == r1["world_size"] == PROCESSES and r0["pid"] != r1["pid"]
    assert r0["accelerator"] == "CPUAccelerator" and r0["threads"] == r1["threads"] == 1  # 2 threads split
    assert r0["global_step"] == r1["global_step"] == global_step
    assert sorted(r0["train"]) == sorted(r1["train"]) == [str(e) for e in range(EPOCHS)]
    orders = []
    for epoch in r0["train"]:
        seen0 = [i for batch in r0["train"][epoch] for i in batch]
        seen1 = [i for batch in r1["train"][epoch] for i in batch]
        assert len(seen0) == len(seen1) == N_TRAIN // PROCESSES, (epoch, seen0, seen1)
        assert not set(seen0) & set(seen1) and len(set(seen0) | set(seen1)) == N_TRAIN, (epoch, seen0, seen1)
        orders.append(seen0 + seen1)
    assert orders[0] != orders[1]  # reshuffled every epoch
    assert r0["published"] is True and r1["published"] is False
    if not has_val:
        return
    for epoch in r0["val"]:
        seen = sorted(i for r in (r0, r1) for batch in r["val"][epoch] for i in batch)
        assert len(seen) == N_VAL and len(set(seen)) == N_VAL, (epoch, seen)  # each session once
        assert [len(r["val"][epoch]) for r in (r0, r1)] == [2, 1]  # ... split between the ranks, unevenly
    assert [e["metrics"] for e in r0["epochs"]] == [e["metrics"] for e in r1["epochs"]]
    assert all(e["metrics"] for e in r0["epochs"])
    if "best" in r0:
        assert r0["best"] == r1["best"] and r0["best"]["score"] is not None


def checkpoint_weights(path: Path, prefix: str, key: str = "state_dict") -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)[key]
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def assert_same(published: dict, expected: dict) -> None:
    assert published.keys() == expected.keys() and published
    for key in published:
        assert torch.equal(published[key], expected[key]), key


def test_autoencoder_two_optimisers_under_ddp(runs):
    root, out = runs
    _, records = out["autoencoder"]
    check_ranks(records, global_step=2 * EPOCHS * steps_per_epoch(PROCESSES))  # generator + discriminator steps
    folder = models(root) / "autoencoder"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["selected_checkpoint"] == "best.ckpt" and summary["global_step"] == records[0]["global_step"]
    assert summary["best_val_ssim"] == pytest.approx(records[0]["best"]["score"])
    ckpt = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
    assert len(ckpt["optimizer_states"]) == 2 and all(s["state"] for s in ckpt["optimizer_states"])
    best = checkpoint_weights(folder / "best.ckpt", "autoencoder.")
    assert_same(
        torch.load(folder / "weights.pt", weights_only=True), {k[len("autoencoder.") :]: v for k, v in best.items()}
    )
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["val/ssim"].notna().sum() == EPOCHS


def test_ldm_with_ema_under_ddp_halves_the_steps(runs):
    root, out = runs
    _, records = out["ldm"]
    check_ranks(records, global_step=EPOCHS * steps_per_epoch(PROCESSES))
    single = json.loads((models(root) / "ldm_1process/summary.json").read_text())
    double = json.loads((models(root) / "ldm/summary.json").read_text())
    assert single["global_step"] == EPOCHS * steps_per_epoch(1) == 2 * double["global_step"]
    assert out["ldm_1process"][1][0]["world_size"] == 1
    folder = models(root) / "ldm"
    ckpt = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    ema = {k[len("unet.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    raw = {k[len("unet.") :]: v for k, v in ckpt["current_model_state"].items() if k.startswith("unet.")}
    published = torch.load(folder / "weights.pt", weights_only=True)
    assert_same(published, ema)  # the final EMA weights ...
    assert any(not torch.equal(published[k], raw[k]) for k in published)  # ... not the raw ones


def test_ldae_with_frozen_ldm_under_ddp(runs):
    from ddp_probe import digest

    root, out = runs
    _, records = out["ldae"]
    check_ranks(records, global_step=EPOCHS * steps_per_epoch(PROCESSES))
    stage2 = digest(torch.load(models(root) / "ldm/weights.pt", weights_only=True))
    assert records[0]["frozen_ldm"] == records[1]["frozen_ldm"] == stage2
    folder = models(root) / "ldae"
    best = checkpoint_weights(folder / "best.ckpt", "")
    published = torch.load(folder / "weights.pt", weights_only=True)
    assert_same(published, {k: v for k, v in best.items() if k.startswith(("encoder.", "estimator."))})
    assert not any(k.startswith("estimator.ldm.") for k in published)


def test_dae_baseline_under_ddp(runs):
    root, out = runs
    _, records = out["dae"]
    check_ranks(records, global_step=EPOCHS * steps_per_epoch(PROCESSES))
    folder = models(root) / "dae"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_val_ssim"] == pytest.approx(records[0]["best"]["score"])
    assert_same(
        torch.load(folder / "weights.pt", weights_only=True),
        checkpoint_weights(folder / f"{Path(records[0]['best']['path']).name}", "dae."),
    )


def test_ldae_killed_mid_epoch_resumes_to_the_uninterrupted_run(runs):
    root, out = runs
    _, full = out["ldae"]
    target, run = root / "ldae_killed", root / "run/ldae_killed"
    code, killed = run_verb(root, "ldae_killed", ldae_argv(root, target, run), kill_at=KILL_AT_STEP)
    assert code == -signal.SIGKILL and not (target / "weights.pt").exists()
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == KILL_AT_STEP
    _, resumed = run_verb(root, "ldae_resumed", ldae_argv(root, target, run))
    assert json.loads((target / "summary.json").read_text())["resumed"] is True
    for rank in (0, 1):
        # the resumed ranks train exactly the batches the killed run had not: the rest of epoch 1
        done = KILL_AT_STEP - steps_per_epoch(PROCESSES)
        assert resumed[rank]["train"] == {"1": full[rank]["train"]["1"][done:]}, rank
        assert resumed[rank]["global_step"] == full[rank]["global_step"]
        assert resumed[rank]["frozen_ldm"] == full[rank]["frozen_ldm"]
    assert resumed[0]["best"]["score"] == pytest.approx(full[0]["best"]["score"])
    again = torch.load(target / "weights.pt", weights_only=True)
    uninterrupted = torch.load(models(root) / "ldae/weights.pt", weights_only=True)
    assert again.keys() == uninterrupted.keys()
    for key in again:
        torch.testing.assert_close(again[key], uninterrupted[key], msg=key)
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    reference = torch.load(root / "run/ldae/checkpoints/last.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        for name, value in reference[key].items():
            torch.testing.assert_close(last[key][name], value, msg=f"{key} {name}")


# ------------------------------------------------------------------------- the same resume, in one process
class _Killed(Exception):
    pass


def _toy_fit(run_dir: Path, kill_at: int = 0):
    """10 samples, batch 3: 4 batches an epoch, 3 epochs, EMA 0.9, last.ckpt every 7 steps; ``kill_at``: the run
    stops (exception, no final checkpoint) at the first batch after step ``kill_at``."""
    import lightning.pytorch as pl

    from ldae import verbs
    from ldae.training import common, stage

    class Toy(stage.StepSeeding, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch_idx, batch["index"].tolist()))
            return (self.net(batch["x"]) ** 2).mean() + 0.1 * torch.randn(())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"x": torch.full((4,), float(i)), "index": i}

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if kill_at and trainer.global_step >= kill_at:
                raise _Killed

    pl.seed_everything(0)
    module = Toy()
    settings = common.train_settings(
        {
            **verbs.schema_defaults("ldm.train"),
            "max_epochs": 3,
            "batch_size": 3,
            "accumulate_grad_batches": 1,
            "num_workers": 0,
            "checkpoint_every_n_steps": 7,
            "val_every_n_epochs": 1,
            "log_every_n_steps": 1,
        }
    )
    trainer = common.build_trainer(
        settings, run_dir, ema_decay=0.9, enable_progress_bar=False, callbacks=[stage.SaveLastAtEnd(run_dir), Kill()]
    )
    try:
        trainer.fit(module, stage.loader(Data(), settings, shuffle=True), ckpt_path=common.resume_checkpoint(run_dir))
    except _Killed:
        pass
    return module


def test_mid_epoch_resume_continues_with_the_next_batch(tmp_path):
    """Stopped after the checkpoint at step 7 (epoch 1, batch 2 of 4): the resumed run trains batches 3 of epoch 1
    and epoch 2, exactly the uninterrupted run's, and ends with its raw and EMA weights (the resumed run writes no
    step checkpoint of its own, so its final last.ckpt is the one written at the end of training)."""
    full = _toy_fit(tmp_path / "full")
    killed = _toy_fit(tmp_path / "part", kill_at=7)
    assert torch.load(tmp_path / "part/checkpoints/last.ckpt", weights_only=True)["global_step"] == 7
    resumed = _toy_fit(tmp_path / "part")
    assert len(full.seen) == 12 and killed.seen + resumed.seen == full.seen
    final = torch.load(tmp_path / "part/checkpoints/last.ckpt", weights_only=True)
    reference = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == reference["global_step"] == 12
    for key in ("state_dict", "current_model_state"):  # EMA and raw weights
        for name, value in reference[key].items():
            assert torch.equal(final[key][name], value), (key, name)
    assert not torch.equal(final["state_dict"]["net.weight"], final["current_model_state"]["net.weight"])
