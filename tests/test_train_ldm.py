"""Stage 2 (latent DDPM): parameter count of the paper configuration, the epsilon loss decreasing, the verb
end-to-end on a tiny latent store (final EMA weights published, loadable; a rerun resumes; other latents start
afresh)."""

from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ldae import verbs
from ldae.data.latents import LatentStore
from ldae.models import build_ldm_unet, count_parameters
from ldae.models.io import load_ldm, load_schedule
from ldae.training import ldm as L

from helpers.tiny_models import TINY_TRAIN

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*(srun|LeafSpec|many workers|Experiment logs).*")

TINY = {
    "network": {
        "channels": [16, 32, 32],
        "num_res_blocks": 1,
        "attention_levels": [False, True, True],
        "norm_num_groups": 8,
    },
    "lr": 1e-3,
    "ema_decay": 0.9,
    "train": {**TINY_TRAIN, "max_epochs": 2},
}


def tiny_cfg(**over):
    return verbs.section("ldm", {**TINY, **over})


def make_store(root, n=6, shape=(3, 8, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    latents = (rng.normal(size=(n, *shape)) * 1.7 + 0.3).astype(np.float32)
    split = ["train"] * (n - 2) + ["val", "test"]
    index = pd.DataFrame(
        {
            "participant_id": [f"sub-{i // 2}" for i in range(n)],
            "session_id": [f"ses-M{12 * (i % 2):02d}" for i in range(n)],
            "split": split,
        }
    )
    scale = 1.0 / float(latents[: n - 2].std())
    LatentStore(root).write(latents, index, scale, {"source": "test"})
    return LatentStore(root)


def test_paper_unet_parameter_count():
    with torch.device("meta"):
        unet = build_ldm_unet({**verbs.section("ldm.network"), "latent_channels": 3})
    n = count_parameters(unet)
    assert abs(n - 486e6) < 2e6, n  # paper: "LDDIM @486M"


def test_tiny_unet_shapes():
    module = L.LDMModule(tiny_cfg(), latent_channels=3)
    x = torch.randn(2, 3, 8, 8, 8)
    assert module.eps(x, torch.tensor([0, 999])).shape == x.shape
    assert module.schedule.num_train_timesteps == 1000
    assert float(module.schedule.betas[0]) == pytest.approx(1e-4) and float(module.schedule.betas[-1]) == pytest.approx(
        0.02
    )


@pytest.mark.slow
def test_eps_loss_decreases_on_a_toy_batch():
    from ldae.diffusion import eps_loss

    pl.seed_everything(0)
    module = L.LDMModule(tiny_cfg(network={**TINY["network"], "dropout": 0.0}), latent_channels=3)
    opt = module.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 8, 8, 8, generator=g)
    t_eval = torch.tensor([50, 300, 600, 900])
    n_eval = torch.randn(x0.shape, generator=g)

    def evaluate():
        with torch.no_grad():
            return float(eps_loss(module.eps, x0, t_eval, n_eval, module.schedule))

    before = evaluate()
    for _ in range(30):
        loss = module.training_step({"latent": x0}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.8 * before


def run(tmp_path, store_root, out="ldm", extra=()):
    argv = [
        "--latents",
        str(store_root),
        "--out-dir",
        str(tmp_path / out),
        "--run-dir",
        str(tmp_path / "run"),
        "--config",
        json.dumps(TINY),
        "--devices",
        "0",
        *extra,
    ]
    assert L.main(argv) == 0
    return tmp_path / out


@pytest.mark.slow
def test_verb_publishes_final_ema_weights_and_resumes(tmp_path):
    store = make_store(tmp_path / "latents")
    out = run(tmp_path, store.root)
    for name in ("weights.pt", "config.yaml", "metrics.csv", "summary.json", "last.ckpt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed"] is False
    assert summary["parameters"]["unet"] == count_parameters(build_ldm_unet({**TINY["network"], "latent_channels": 3}))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["latents"]["scale_factor"] == pytest.approx(store.read()[2])
    assert config["config"]["network"]["latent_channels"] == 3

    # weights.pt holds the EMA weights of the final checkpoint (not the raw weights)
    weights = torch.load(out / "weights.pt", weights_only=True)
    ckpt = torch.load(out / "last.ckpt", weights_only=False)
    raw = {k[len("unet.") :]: v for k, v in ckpt["current_model_state"].items() if k.startswith("unet.")}
    ema = {k[len("unet.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    assert all(torch.equal(weights[k], ema[k]) for k in weights)
    assert any(not torch.equal(weights[k], raw[k]) for k in weights)
    unet = load_ldm(out)
    assert not any(p.requires_grad for p in unet.parameters())
    assert load_schedule(out).num_train_timesteps == 1000
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"train/loss_step", "val/loss"} <= set(metrics.columns)

    # the rule restarted (same inputs): resumes from last.ckpt, nothing retrained, same weights
    out2 = run(tmp_path, store.root, out="ldm2")
    summary2 = json.loads((out2 / "summary.json").read_text())
    assert summary2["resumed"] is True and summary2["global_step"] == 4
    again = torch.load(out2 / "weights.pt", weights_only=True)
    assert all(torch.equal(again[k], weights[k]) for k in weights)

    # other latents (encode_latents reran): the saved state is not reused
    make_store(tmp_path / "latents", seed=5)
    out3 = run(tmp_path, store.root, out="ldm3")
    assert json.loads((out3 / "summary.json").read_text())["resumed"] is False


def test_unknown_key_in_section_is_an_error(tmp_path):
    store = make_store(tmp_path / "latents")
    with pytest.raises(ValueError, match="ldm.learning_rate"):
        L.main(["--latents", str(store.root), "--out-dir", str(tmp_path / "o"), "--config", '{"learning_rate": 1}'])


@pytest.mark.slow
@pytest.mark.parametrize("clip", [1e-4, None])
def test_gradient_clipping_is_applied(tmp_path, monkeypatch, clip):
    """Automatic optimisation: train.gradient_clip_val (default 1.0, the authors') reaches Lightning's clipping: the
    norm Adam steps with is at most the threshold (and without clipping larger, so the check can fail)."""
    assert verbs.section("ldm")["train"]["gradient_clip_val"] == 1.0
    norms = []
    original = torch.optim.Adam.step

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        grads = [p.grad.norm() for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()))
        return original(self)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    store = make_store(tmp_path / "latents")
    cfg = {**TINY, "ema_decay": 0.0, "train": {**TINY["train"], "max_epochs": 1, "gradient_clip_val": clip}}
    assert (
        L.main(
            [
                "--latents",
                str(store.root),
                "--out-dir",
                str(tmp_path / "out"),
                "--run-dir",
                str(tmp_path / "run"),
                "--config",
                json.dumps(cfg),
                "--devices",
                "0",
            ]
        )
        == 0
    )
    assert len(norms) == 2  # 4 training latents, batch 2
    assert (max(norms) <= 1e-4 * (1 + 1e-3)) if clip else (min(norms) > 1e-3), norms
