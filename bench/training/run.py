"""Training throughput per stage (steps/s) on this machine's CPU for a workflow config (default: the demo).

Each stage is timed on random tensors of the config's sizes with the stage's own Lightning module and optimiser
(one step = forward + backward + optimiser step, as in training; stage 1 = one generator AND one discriminator
update), after warm-up steps. Also timed: encoding one scan (encode_latents), and the stage-3 validation
reconstruction (semantic encoder + DDIM with the gradient estimator + AE decoder) at the config's val_ddim_steps.
Parameter counts of the paper configuration are computed on the meta device (no memory).

    .venv/bin/python bench/training/run.py                       # demo config, writes bench/results/training.json
    .venv/bin/python bench/training/run.py --config tests/configs/ci.yaml --steps 3 --out /tmp/ci.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import yaml  # noqa: E402

warnings.filterwarnings("ignore")


def merged_config(overlay: str | None) -> dict:
    def merge(base, extra):
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if overlay:
        merge(config, yaml.safe_load(Path(overlay).read_text()))
    return config


def timed(step, steps: int, warmup: int) -> dict:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {"seconds_per_step": round(seconds, 4), "steps_per_s": round(1.0 / seconds, 3)}


def paper_parameters() -> dict:
    from ldae import verbs
    from ldae.models import (
        GradientEstimator,
        build_autoencoder,
        build_discriminator,
        build_ldm_unet,
        build_semantic_encoder,
        count_parameters,
    )
    from ldae.training import autoencoder as A

    with torch.device("meta"):
        ae = build_autoencoder(A.network_config(verbs.section("autoencoder")))
        disc = build_discriminator(A.network_config(verbs.section("autoencoder")))
        unet = build_ldm_unet({**verbs.section("ldm.network"), "latent_channels": 3})
        encoder = build_semantic_encoder({**verbs.section("ldae.encoder"), "pretrained_path": None})
        estimator = GradientEstimator(build_ldm_unet({**verbs.section("ldm.network"), "latent_channels": 3}), y_dim=768)
    frozen = count_parameters(estimator.ldm)
    branch = count_parameters(estimator) - frozen
    enc = count_parameters(encoder)
    return {
        "autoencoder": count_parameters(ae),
        "discriminator": count_parameters(disc),
        "ldm_unet": count_parameters(unet),
        "ldae_semantic_encoder": enc,
        "ldae_estimator_branch": branch,
        "ldae_total": enc + frozen + branch,
        "paper": {"autoencoder": "~14M", "ldm": "486M", "ldae_total": "~920M"},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=str(ROOT / "profiles/demo/demo.yaml"),
        help="config overlay on config.yaml (default: the demo's)",
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/training.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from ldae import files, verbs
    from ldae.diffusion import ddim_sample, guided_eps_fn
    from ldae.models import build_ldm_unet, count_parameters
    from ldae.training import autoencoder as A
    from ldae.training import ldae as D
    from ldae.training import ldm as L
    from ldae.training import stage

    config = merged_config(args.config)
    shape = list(config["images"]["shape"])
    ae_cfg = verbs.section("autoencoder", config["autoencoder"])
    ldm_cfg = verbs.section("ldm", config["ldm"])
    ldae_cfg = verbs.section("ldae", config["ldae"])
    results: dict = {
        "config": os.path.relpath(args.config, ROOT),
        "device": "cpu",
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "image_shape": shape,
        "steps_timed": args.steps,
        "load_average_at_start": list(os.getloadavg()),
        "stages": {},
    }

    # stage 1
    module, _, _ = A.build_module(ae_cfg)
    stage.cpu_channels_last_(module)  # as Lightning's on_fit_start does on CPU
    opt_g, opt_d = module.configure_optimizers()
    bs = int(ae_cfg["train"]["batch_size"])
    x = stage.cpu_fast(torch.rand(bs, 1, *shape))

    def ae_step():
        loss, _, recon = module.generator_losses(x)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if module.w["adversarial"] > 0:
            loss_d = module.discriminator_loss(x, recon)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()

    entry = timed(ae_step, args.steps, args.warmup)
    z = module.autoencoder.encode(x[:1])[0]
    latent_shape = list(z.shape[1:])
    entry.update(
        batch_size=bs,
        parameters=count_parameters(module.autoencoder),
        discriminator_parameters=count_parameters(module.discriminator),
    )
    results["stages"]["train_autoencoder"] = entry
    with torch.no_grad():
        enc = timed(lambda: module.autoencoder.encode(x[:1]), args.steps, args.warmup)
    results["stages"]["encode_latents"] = {"seconds_per_scan": enc["seconds_per_step"], "latent_shape": latent_shape}
    autoencoder = module.autoencoder.eval()

    # stage 2
    ldm = L.LDMModule(ldm_cfg, latent_channels=latent_shape[0])
    stage.cpu_channels_last_(ldm)
    opt = ldm.configure_optimizers()
    bs = int(ldm_cfg["train"]["batch_size"])
    lat = torch.randn(bs, *latent_shape)

    def ldm_step():
        loss = ldm.training_step({"latent": lat}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    entry = timed(ldm_step, args.steps, args.warmup)
    entry.update(batch_size=bs, parameters=count_parameters(ldm.unet))
    results["stages"]["train_ldm"] = entry

    # stage 3 (frozen LDM: the stage-2 network above)
    unet = build_ldm_unet({**ldm_cfg["network"], "latent_channels": latent_shape[0]})
    unet.load_state_dict(ldm.unet.state_dict())
    unet.requires_grad_(False).eval()
    from ldae.diffusion import DiffusionSchedule

    module3 = D.LDAEModule(ldae_cfg, unet, DiffusionSchedule.from_config(ldm_cfg["diffusion"]))
    stage.cpu_channels_last_(module3)
    opt = module3.configure_optimizers()
    bs = int(ldae_cfg["train"]["batch_size"])
    batch = {"image": torch.rand(bs, 1, *shape), "latent": torch.randn(bs, *latent_shape)}

    def ldae_step():
        loss = module3.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    entry = timed(ldae_step, args.steps, args.warmup)
    counts = D.parameter_counts(module3)
    entry.update(batch_size=bs, parameters=counts["total"], trainable_parameters=counts["trainable"])
    module3.eval()
    steps = int(ldae_cfg["val_ddim_steps"])

    def reconstruct():
        with torch.no_grad():
            y = module3.encoder(batch["image"][:1])
            eps_fn = guided_eps_fn(module3.estimator, y, module3.schedule, ldae_cfg["guidance"])
            zt = ddim_sample(eps_fn, torch.randn(1, *latent_shape), module3.schedule, steps)
            autoencoder.decode(zt)

    rec = timed(reconstruct, max(1, args.steps // 2), 0)
    entry.update(reconstruction_seconds=rec["seconds_per_step"], reconstruction_ddim_steps=steps)
    results["stages"]["train_ldae"] = entry
    results["paper_parameters"] = paper_parameters()
    results["load_average_at_end"] = list(os.getloadavg())

    files.write_json(args.out, results, trailing_newline=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
