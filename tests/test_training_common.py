"""Shared training machinery: checkpoints every N steps, resume with identical optimizer state, EMA,
resolved config, atomic weights, latent store."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from ldae import verbs
from ldae.data.latents import LatentDataset, LatentStore
from ldae.training import common


class Toy(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.steps_run = 0

    def training_step(self, batch, _):
        self.steps_run += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader(n=16):  # 4 batches an epoch: checkpoints at step 4, 8 fall on epoch ends
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def settings(**kw):
    return common.train_settings(
        {
            **verbs.schema_defaults("ldm.train"),
            "max_epochs": 1,
            "batch_size": 1,
            "accumulate_grad_batches": 1,
            "num_workers": 0,
            "checkpoint_every_n_steps": 4,
            "val_every_n_epochs": 1,
            "log_every_n_steps": 10,
            **kw,
        }
    )


def fit(run_dir, max_steps, ema=None):
    pl.seed_everything(0)
    model = Toy()
    trainer = common.build_trainer(
        settings(max_steps=max_steps, max_epochs=10), run_dir, ema_decay=ema, enable_progress_bar=False
    )
    trainer.fit(model, loader(), ckpt_path=common.resume_checkpoint(run_dir))
    return model, trainer


def test_resume_continues_from_saved_step_with_same_optimizer_state(tmp_path):
    full, full_trainer = fit(tmp_path / "full", max_steps=12)
    part, _ = fit(tmp_path / "part", max_steps=8)  # "interrupted" after 8 steps: last.ckpt at step 8
    ckpt = torch.load(tmp_path / "part/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8
    resumed, resumed_trainer = fit(tmp_path / "part", max_steps=12)
    assert resumed_trainer.global_step == full_trainer.global_step == 12
    assert resumed.steps_run == 4  # only the missing steps were trained
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)
    full_state = full_trainer.optimizers[0].state_dict()["state"]
    resumed_state = resumed_trainer.optimizers[0].state_dict()["state"]
    for key in full_state:
        torch.testing.assert_close(full_state[key]["exp_avg_sq"], resumed_state[key]["exp_avg_sq"])


def test_ema_weights_differ_from_raw_and_lag(tmp_path):
    model, _ = fit(tmp_path / "ema", max_steps=12, ema=0.9)
    raw, _ = fit(tmp_path / "raw", max_steps=12)
    # after training the EMA callback copies the averaged weights into the model
    assert not torch.allclose(model.net.weight, raw.net.weight)


def test_unknown_training_key_is_an_error():
    with pytest.raises(ValueError, match="max_epoch"):
        common.train_settings({**verbs.schema_defaults("ldm.train"), "max_epoch": 3})


def test_weights_roundtrip_and_missing_file_is_named(tmp_path):
    from ldae.models import io

    io.save_weights(Toy().state_dict(), tmp_path)
    state = torch.load(io.weights_file(tmp_path), weights_only=True)
    assert set(state) == {"net.weight", "net.bias"}
    with pytest.raises(FileNotFoundError, match="missing"):
        io.load_autoencoder(tmp_path / "missing")
    assert not list(tmp_path.glob(".*"))


def test_latent_store_roundtrip_scaled(tmp_path):
    latents = np.random.default_rng(0).normal(size=(5, 3, 2, 2, 2)).astype(np.float32)
    index = pd.DataFrame(
        {
            "participant_id": list("abcde"),
            "session_id": ["ses-M000"] * 5,
            "split": ["train", "train", "val", "test", "train"],
        }
    )
    store = LatentStore(tmp_path / "latents")
    store.write(latents, index, 2.0, {"encoder": "test"})
    store.write(latents, index, 2.0, {"encoder": "test"})  # rewrite replaces, leaves no temp folder
    assert [p.name for p in tmp_path.iterdir()] == ["latents"]
    dataset = LatentDataset(store, "train")
    assert len(dataset) == 3
    torch.testing.assert_close(dataset[2]["latent"], torch.from_numpy(latents[4]) * 2.0)
    with pytest.raises(Exception, match="split"):
        LatentDataset(store, "probe")


@pytest.mark.parametrize(
    "env, processes, expected",
    [
        ({}, 2, None),  # not in SLURM: Lightning's own detection (none)
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train_ldm"}, 1, "SLURMEnvironment"),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train_ldm"}, 2, "LightningEnvironment"),
        ({"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train_ldm"}, 2, "SLURMEnvironment"),
    ],
)
def test_cluster_plugins_fit_the_slurm_job(monkeypatch, env, processes, expected):
    """The slurm profile submits one task with N GPUs: DDP then needs Lightning's own launcher."""
    for key in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugins = common.cluster_plugins(processes)
    assert [type(p).__name__ for p in plugins] == ([expected] if expected else [])
