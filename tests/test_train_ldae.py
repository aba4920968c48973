"""Stage 3 (LDAE): parameter count of the paper configuration, the stage-2 checkpoint as a hard requirement, the
frozen LDM really frozen (and kept out of checkpoints, restored on resume), the PDAE loss decreasing, and DDIM
encode -> decode with the trained estimator reproducing the latent at T = 100 on a tiny overfit example."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
import yaml

from ldae import verbs
from ldae.diffusion import DiffusionSchedule, ddim_invert, ddim_sample, eps_loss, guided_eps_fn, pdae_loss
from ldae.models import GradientEstimator, build_autoencoder, build_ldm_unet, build_semantic_encoder, count_parameters
from ldae.training import common, stage
from ldae.training import ldae as D
from ldae.training import ldm as L

from helpers.tiny_models import TINY_TRAIN, TINY_UNET

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*(srun|LeafSpec|many workers|Experiment logs|backbone weights).*")

LDM_NET = {**TINY_UNET, "dropout": 0.0, "latent_channels": 3}
ENCODER = {"backbone": "tiny", "tiny_dims": [8, 24], "tiny_depths": [1, 1], "y_dim": 24, "chunk_size": 8}
TINY = {
    "encoder": ENCODER,
    "estimator": {"dropout": 0.0},
    "lr": 1e-3,
    "ema_decay": 0.9,
    "val_ddim_steps": 5,
    "cache": "none",
    "train": TINY_TRAIN,
}
AE_NET = {"channels": [8, 16], "num_res_blocks": 1, "attention_levels": [False, False], "norm_num_groups": 8}


def tiny_cfg(**over):
    return verbs.section("ldae", {**TINY, **over})


def perturbed_unet(net=LDM_NET, seed=0):
    """A stage-2 U-Net with non-zero weights everywhere (MONAI zero-initialises some layers), as after training."""
    torch.manual_seed(seed)
    unet = build_ldm_unet(net)
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    return unet


def write_ldm(tmp_path, unet, net=LDM_NET):
    weights, config = tmp_path / "ldm_weights.pt", tmp_path / "ldm_config.yaml"
    torch.save(unet.state_dict(), weights)
    config.write_text(
        yaml.safe_dump(
            {
                "stage": "ldm",
                "config": {"network": net, "diffusion": verbs.section("ldm.diffusion")},
                "latents": {"shape": [3, 8, 8, 8], "scale_factor": 1.0},
            }
        )
    )
    return weights, config


class Toy(torch.utils.data.Dataset):
    def __init__(self, n=4):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, 16, 16, 16, generator=g)
        self.latents = torch.randn(n, 3, 8, 8, 8, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "latent": self.latents[i], "row": i}


def test_paper_parameter_count():
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_semantic_encoder({**verbs.section("ldae.encoder"), "pretrained_path": None})
        estimator = GradientEstimator(build_ldm_unet({**verbs.section("ldm.network"), "latent_channels": 3}), y_dim=768)
    total = count_parameters(encoder) + count_parameters(estimator)
    assert 900e6 < total < 940e6, total  # paper: ~920M
    assert abs(count_parameters(estimator.ldm) - 486e6) < 2e6


def test_missing_or_mismatched_stage2_checkpoint_is_a_hard_error(tmp_path):
    weights, config = write_ldm(tmp_path, perturbed_unet())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.build_module(tiny_cfg(), tmp_path / "missing.pt", config)
    with pytest.raises(ValueError, match="no stage-2 LDM checkpoint"):
        D.build_module(tiny_cfg(), "", config)
    other = {**LDM_NET, "channels": [8, 16, 32]}
    torch.save(build_ldm_unet(other).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not match"):
        D.build_module(tiny_cfg(), tmp_path / "other.pt", config)
    module = D.build_module(tiny_cfg(), weights, config)  # the right one loads
    for key, value in torch.load(weights, weights_only=True).items():
        assert torch.equal(module.estimator.ldm.state_dict()[key], value)


def test_verb_refuses_to_start_without_stage2_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="run rule train_ldm"):
        D.main(
            [
                "--latents",
                str(tmp_path),
                "--ldm",
                str(tmp_path / "ldm"),
                "--autoencoder",
                str(tmp_path / "ae"),
                "--qc",
                "q",
                "--sessions",
                "s",
                "--splits",
                "p",
                "--out-dir",
                str(tmp_path / "out"),
            ]
        )


@pytest.mark.slow
def test_pdae_loss_decreases_on_a_toy_batch(tmp_path):
    weights, config = write_ldm(tmp_path, perturbed_unet())
    pl.seed_everything(0)
    module = D.build_module(tiny_cfg(), weights, config)
    opt = module.configure_optimizers()
    data = Toy(4)
    batch = {"image": data.images, "latent": data.latents}
    g = torch.Generator().manual_seed(3)
    t_eval, n_eval = torch.tensor([20, 200, 500, 800]), torch.randn(data.latents.shape, generator=g)

    def evaluate():
        with torch.no_grad():
            return float(
                pdae_loss(
                    module.estimator, data.latents, t_eval, n_eval, module.encoder(data.images), module.schedule, 0.1
                )
            )

    before = evaluate()
    for i in range(25):
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.9 * before


def fit(run_dir, epochs, weights, config):
    pl.seed_everything(0)
    ae = build_autoencoder(AE_NET).eval().requires_grad_(False)
    module = D.build_module(tiny_cfg(), weights, config, autoencoder=ae, scale_factor=1.0)
    settings = common.train_settings({**tiny_cfg()["train"], "max_epochs": epochs})
    trainer = common.build_trainer(
        settings,
        run_dir,
        monitor="val/ssim",
        ema_decay=0.9,
        callbacks=[stage.SaveLastAtEnd(run_dir)],
        enable_progress_bar=False,
    )
    trainer.fit(
        module,
        stage.loader(Toy(), settings, shuffle=True),
        stage.loader(Toy(2), settings, shuffle=False),
        ckpt_path=common.resume_checkpoint(run_dir),
    )
    return module, trainer


@pytest.mark.slow
def test_frozen_ldm_never_changes_is_not_checkpointed_and_resume_is_exact(tmp_path):
    weights, config = write_ldm(tmp_path, perturbed_unet())
    stage2 = torch.load(weights, weights_only=True)
    full, full_trainer = fit(tmp_path / "full", 2, weights, config)
    for key, value in full.estimator.ldm.state_dict().items():  # after training, EMA swaps and validation
        assert torch.equal(value, stage2[key]), key
    assert not any(p.requires_grad for p in full.estimator.ldm.parameters())
    assert all(p.requires_grad for p in full.estimator.trainable_parameters())

    fit(tmp_path / "part", 1, weights, config)
    ckpt = torch.load(tmp_path / "part/checkpoints/last.ckpt", weights_only=False)
    for key in ("state_dict", "current_model_state"):
        assert not any(k.startswith(D.FROZEN_PREFIX) for k in ckpt[key])
        assert any(k.startswith("estimator.branch.") for k in ckpt[key])
    assert (tmp_path / "part/checkpoints/best.ckpt").is_file()
    resumed, resumed_trainer = fit(tmp_path / "part", 2, weights, config)
    assert resumed_trainer.global_step == full_trainer.global_step == 4
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    metrics = (tmp_path / "part/logs/metrics.csv").read_text().splitlines()[0]
    assert "val/ssim" in metrics and "val/latent_mse" in metrics


@pytest.mark.slow
def test_ddim_encode_decode_reproduces_the_latent_at_100_steps(tmp_path):
    """Tiny overfit example: an LDM fitted to one latent, an LDAE fitted on it; deterministic DDIM inversion
    conditioned on y_sem followed by DDIM decoding (100 steps each) gives the latent back."""
    torch.manual_seed(0)
    ldm = L.LDMModule(
        verbs.section("ldm", {"network": {k: v for k, v in LDM_NET.items() if k != "latent_channels"}, "lr": 5e-3}),
        latent_channels=3,
    )
    opt = ldm.configure_optimizers()
    x0, image = torch.randn(1, 3, 8, 8, 8), torch.rand(1, 1, 16, 16, 16)
    for _ in range(120):
        loss = eps_loss(
            ldm.eps,
            x0.expand(4, -1, -1, -1, -1),
            ldm.schedule.sample_timesteps(4),
            torch.randn(4, 3, 8, 8, 8),
            ldm.schedule,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights, config = write_ldm(tmp_path, ldm.unet)
    module = D.build_module(tiny_cfg(), weights, config)
    opt = module.configure_optimizers()
    for i in range(15):
        loss = module.training_step(
            {"latent": x0.expand(4, -1, -1, -1, -1), "image": image.expand(4, -1, -1, -1, -1)}, i
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    schedule = DiffusionSchedule.from_config(verbs.section("ldm.diffusion"))
    with torch.no_grad():
        y = module.encoder(image)
    eps_fn = guided_eps_fn(module.estimator, y, schedule, "score")
    assert float(torch.linalg.vector_norm(module.estimator(x0, torch.tensor([500]), y))) > 0  # G is trained
    x_T = ddim_invert(eps_fn, x0, schedule, 100)
    error = float((ddim_sample(eps_fn, x_T, schedule, 100) - x0).norm() / x0.norm())
    assert error < 0.15, error  # the standard (paper) inversion: first-order error
    x_T = ddim_invert(eps_fn, x0, schedule, 100, fixed_point_iters=2)
    error = float((ddim_sample(eps_fn, x_T, schedule, 100) - x0).norm() / x0.norm())
    assert error < 5e-3, error
