"""Stage 1 (AutoencoderKL + patch GAN): shapes and parameter counts, losses that decrease, the manual GAN
optimisation resuming exactly, absent pretrained weights (perceptual term disabled and recorded, never a crash)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch

from ldae import verbs
from ldae.models import count_parameters
from ldae.training import autoencoder as A
from ldae.training import common, stage

from helpers.tiny_models import TINY_AE_GAN

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*(srun|LeafSpec|manual optimization|many workers|Experiment logs).*")

TINY = {
    "network": TINY_AE_GAN,
    "cache": "none",
    "lr": 1e-3,
    "disc_lr": 1e-3,
    "train": {
        "max_epochs": 1,
        "batch_size": 1,
        "accumulate_grad_batches": 2,
        "num_workers": 0,
        "checkpoint_every_n_steps": 4,
        "log_every_n_steps": 1,
    },
}


def tiny_cfg(**over):
    given = {**TINY, **over}
    return verbs.section("autoencoder", given)


class Toy(torch.utils.data.Dataset):
    def __init__(self, n=4, size=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, size, size, size, generator=g) * 0.5 + 0.25

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def test_shapes_and_parameter_counts():
    module, _, _ = A.build_module(tiny_cfg())
    x = torch.rand(2, 1, 16, 16, 16)
    z_mu, z_sigma = module.autoencoder.encode(x)
    assert z_mu.shape == z_sigma.shape == (2, 3, 8, 8, 8)
    assert module.autoencoder.decode(z_mu).shape == x.shape
    assert module.discriminator(x)[-1].shape[:2] == (2, 1)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ldae.models import build_autoencoder, build_discriminator

        paper = verbs.section("autoencoder")
        n_ae = count_parameters(build_autoencoder(A.network_config(paper)))
        n_d = count_parameters(build_discriminator(A.network_config(paper)))
    assert 13.0e6 < n_ae < 15.0e6, n_ae  # paper: ~14M
    assert 10e6 < n_d < 12e6, n_d


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="autoencoder.loss.l2"):
        verbs.section("autoencoder", {"loss": {"l2": 1.0}})


@pytest.mark.slow
def test_generator_and_discriminator_losses_decrease():
    pl.seed_everything(0)
    module, _, _ = A.build_module(tiny_cfg(loss={"adversarial": 0.1}))
    opt_g, opt_d = module.configure_optimizers()
    x = Toy(2).x
    first = last = None
    d_losses = []
    for _ in range(25):
        loss_g, parts, recon = module.generator_losses(x)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        loss_d = module.discriminator_loss(x, recon)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        d_losses.append(float(loss_d))
        first = first or float(parts["l1"])
        last = float(parts["l1"])
    assert last < 0.7 * first, (first, last)
    assert min(d_losses[-5:]) < d_losses[0]


def fit(run_dir, epochs, cfg):
    pl.seed_everything(0)
    module, _, _ = A.build_module(cfg)
    settings = common.train_settings({**cfg["train"], "max_epochs": epochs})
    trainer = common.build_trainer(
        {**settings, "accumulate_grad_batches": 1, "gradient_clip_val": None},
        run_dir,
        callbacks=[stage.SaveLastAtEnd(run_dir)],
        enable_progress_bar=False,
        find_unused_parameters=True,
    )
    trainer.fit(module, stage.loader(Toy(), settings, shuffle=True), ckpt_path=common.resume_checkpoint(run_dir))
    return module, trainer


@pytest.mark.slow
def test_manual_gan_optimisation_resumes_exactly(tmp_path):
    """4 images, batch 1, accumulation 2: 2 G + 2 D optimiser steps an epoch (global_step +4). An uninterrupted
    3-epoch run equals a 2-epoch run resumed to 3 epochs: weights of both networks and both Adam states."""
    cfg = tiny_cfg(train={**TINY["train"], "gradient_clip_val": 1.0})
    full, full_trainer = fit(tmp_path / "full", 3, cfg)
    fit(tmp_path / "part", 2, cfg)
    ckpt = torch.load(tmp_path / "part/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8 and len(ckpt["optimizer_states"]) == 2
    resumed, resumed_trainer = fit(tmp_path / "part", 3, cfg)
    assert resumed_trainer.global_step == full_trainer.global_step == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for opt_full, opt_resumed in zip(full_trainer.optimizers, resumed_trainer.optimizers):
        sa, sb = opt_full.state_dict()["state"], opt_resumed.state_dict()["state"]
        assert sa.keys() == sb.keys() and sa
        for key in sa:
            torch.testing.assert_close(sa[key]["exp_avg_sq"], sb[key]["exp_avg_sq"])
            assert int(sa[key]["step"]) == int(sb[key]["step"])


def test_absent_perceptual_weights_disable_the_term_and_are_recorded():
    module, messages, status = A.build_module(tiny_cfg(perceptual_weights="/nonexistent/squeeze.pth"))
    assert module.perceptual is None and status["perceptual_enabled"] is False
    assert any("perceptual" in m and "DISABLED" in m for m in messages)
    _, parts, _ = module.generator_losses(Toy(1).x)
    assert "perceptual" not in parts


@pytest.mark.slow
def test_local_perceptual_weights_enable_the_term(tmp_path):
    import torchvision

    path = tmp_path / "squeezenet1_1.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    module, messages, status = A.build_module(tiny_cfg(perceptual_weights=str(path)))
    assert status["perceptual_enabled"] and not any("perceptual" in m for m in messages)
    assert "perceptual" not in dict(module.state_dict())  # kept out of checkpoints
    _, parts, _ = module.generator_losses(Toy(1, size=32).x)
    assert torch.isfinite(parts["perceptual"]) and float(parts["perceptual"]) >= 0


def record_step_grad_norms(monkeypatch):
    """Patch Adam.step to record, per optimiser, the gradient norm it actually steps with (after Lightning's
    closure and hooks, i.e. after any clipping)."""
    norms: dict[int, list[float]] = {}
    original = torch.optim.Adam.step

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.setdefault(id(self), []).append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        )
        return original(self)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return norms


@pytest.mark.slow
@pytest.mark.parametrize("clip", [1e-4, None])
def test_gradient_clipping_reaches_generator_and_discriminator(tmp_path, monkeypatch, clip):
    """Manual optimisation: the module clips BOTH optimisers' gradients (Lightning does not); without clipping the
    same steps have larger norms, so the check can fail."""
    assert verbs.section("autoencoder")["train"]["gradient_clip_val"] == 1.0  # the authors' value, every stage
    norms = record_step_grad_norms(monkeypatch)
    cfg = tiny_cfg(loss={"adversarial": 0.1}, train={**TINY["train"], "gradient_clip_val": clip})
    fit(tmp_path / "run", 1, cfg)
    assert len(norms) == 2 and all(len(v) == 2 for v in norms.values())  # G and D, 2 steps each
    steps = [n for v in norms.values() for n in v]
    if clip is None:
        assert min(steps) > 10 * 1e-4, norms
    else:
        assert max(steps) <= 1e-4 * (1 + 1e-3), norms


def test_lsgan_on_raw_logits_by_default():
    logits = torch.full((1, 1, 2, 2, 2), -2.0)
    module, _, _ = A.build_module(tiny_cfg())
    assert verbs.section("autoencoder")["adversarial_activation"] == "none" and module.adv_loss.activation is None
    raw = module.adv_loss(logits, target_is_real=True, for_discriminator=True)
    assert float(raw) == pytest.approx(9.0)  # (-2 - 1)^2: plain least squares on the logits (authors' code)
    leaky, _, _ = A.build_module(tiny_cfg(adversarial_activation="leaky_relu"))
    assert float(leaky.adv_loss(logits, target_is_real=True, for_discriminator=True)) == pytest.approx(1.1**2)
    with pytest.raises(ValueError, match="adversarial_activation"):
        A.build_module(tiny_cfg(adversarial_activation="sigmoid"))


def test_selection_metric_switch():
    assert A.selection(tiny_cfg()) == ("val/ssim", "max")  # paper
    assert A.selection(tiny_cfg(selection_metric="l1")) == ("val/l1", "min")  # authors' code
    with pytest.raises(ValueError, match="selection_metric"):
        A.selection(tiny_cfg(selection_metric="lpips"))


@pytest.mark.slow
def test_gradient_clipping_under_16_mixed_acts_on_unscaled_gradients(tmp_path, monkeypatch):
    """The authors' 16-mixed precision: gradients are loss-scaled (x 2^16); clipping must see the unscaled ones. The
    norm each optimiser steps with equals the threshold (clipping the scaled gradients instead, before the step,
    would leave 1e-4 / 65536). CPU autocast fp16 with a CPU GradScaler exercises Lightning's AMP path."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    norms = record_step_grad_norms(monkeypatch)
    cfg = tiny_cfg(loss={"adversarial": 0.1}, train={**TINY["train"], "gradient_clip_val": 1e-4})
    pl.seed_everything(0)
    module, _, _ = A.build_module(cfg)
    settings = common.train_settings({**cfg["train"], "max_epochs": 1})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
    )
    trainer.fit(module, stage.loader(Toy(), settings, shuffle=True))
    steps = [n for v in norms.values() for n in v]
    assert len(norms) == 2 and len(steps) == 4 and scaler.get_scale() >= 2.0**15, (norms, scaler.get_scale())
    assert all(0.99e-4 < n <= 1.001e-4 for n in steps), norms
