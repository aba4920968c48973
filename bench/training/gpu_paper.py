"""Paper-size training throughput on ONE GPU (meant for an A100; not run in this project's CI or sessions).

The paper sizes also run on a CPU, slowly: bench/training/paper_size_cpu.py (bench/results/paper_size_cpu.json). In
fp32 at batch 1 the LDM and LDAE training steps and every reconstruction fit ~18 GiB of RAM; the AE and DAE training
steps need ~26 and ~44 GiB (modelled: bench/training/memory_model.py, docs/memory.md).

For each stage, the paper configuration (config.yaml: 128x160x128 images at 1.5 mm, latents 3x16x20x16, the ~14M
AutoencoderKL, the 486M LDM, the ~920M LDAE) is timed on random tensors with the stage's own module and optimiser,
in the precision training uses (bf16-mixed autocast when supported), after warm-up:

* iterations/s at the per-GPU batch size of config.yaml (stage 1: one generator + one discriminator update),
* peak GPU memory (torch.cuda.max_memory_allocated),
* the projected epoch time for N training scans (default 9,300: ~90% of the paper's 10,340), for this one GPU and
  for the GPUs of the rule (resources.<rule>.gpus, assuming linear DDP scaling),
* the LDAE reconstruction time of one scan at T = 100 (semantic encoder + 100 guided DDIM steps + AE decoder;
  paper: 6 s on an A100), and one AE encode.

    python bench/training/gpu_paper.py                      # all stages -> bench/results/training_gpu.json
    python bench/training/gpu_paper.py --stages ldm --steps 20 --batch-ldm 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


def sync():
    torch.cuda.synchronize()


def timed(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="autoencoder,ldm,ldae", help="comma-separated subset")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scans", type=int, default=9300, help="training scans per epoch for the projection")
    parser.add_argument("--batch-ae", type=int, default=None, help="override the per-GPU batch of each stage")
    parser.add_argument("--batch-ldm", type=int, default=None)
    parser.add_argument("--batch-ldae", type=int, default=None)
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32")
    parser.add_argument("--out", default=str(ROOT / "bench/results/training_gpu.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():  # paper sizes run on a CPU too, slowly: bench/training/paper_size_cpu.py
        print(
            "gpu_paper.py needs a CUDA GPU. The paper sizes also run on a CPU (fp32, batch 1: LDM and LDAE "
            "training steps and all reconstructions in ~18 GiB; the AE and DAE training steps need ~26 and ~44 "
            "GiB): bench/training/paper_size_cpu.py; GPU memory per batch: docs/memory.md",
            file=sys.stderr,
        )
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    from ldae import files, verbs
    from ldae.diffusion import DiffusionSchedule, ddim_sample, guided_eps_fn
    from ldae.models import build_ldm_unet
    from ldae.training import autoencoder as A
    from ldae.training import ldae as D
    from ldae.training import ldm as L

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    shape = list(config["images"]["shape"])
    gpus = {
        rule: int(config["resources"].get(rule, {}).get("gpus", 1) or 1)
        for rule in ("train_autoencoder", "train_ldm", "train_ldae")
    }
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    dev = torch.device("cuda")
    stages = set(args.stages.split(","))
    results = {
        "device": torch.cuda.get_device_name(0),
        "precision": precision,
        "torch": torch.__version__,
        "host": platform.node(),
        "image_shape": shape,
        "scans_per_epoch": args.scans,
        "stages": {},
    }

    def record(rule, step, batch, extra=None):
        """Time ``step`` (a training step of rule ``rule`` on ``batch`` scans) and record it under the rule's name."""
        seconds = timed(step, args.steps, args.warmup)
        its = 1.0 / seconds
        epoch_1gpu = args.scans / batch * seconds
        entry = {
            "it_per_s": round(its, 3),
            "seconds_per_it": round(seconds, 4),
            "batch_per_gpu": batch,
            "samples_per_s": round(batch * its, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "epoch_minutes_1gpu": round(epoch_1gpu / 60, 1),
            "rule_gpus": gpus[rule],
            "epoch_minutes_rule_gpus": round(epoch_1gpu / gpus[rule] / 60, 1),
            **(extra or {}),
        }
        results["stages"][rule] = entry
        print(rule, json.dumps(entry), flush=True)

    ae_cfg = verbs.section("autoencoder", config["autoencoder"])
    ldm_cfg = verbs.section("ldm", config["ldm"])
    ldae_cfg = verbs.section("ldae", config["ldae"])
    ae_module, _, _ = A.build_module(ae_cfg)
    ae_module.to(dev)
    latent_shape = list(ae_module.autoencoder.encode(torch.zeros(1, 1, *shape, device=dev))[0].shape[1:])
    results["latent_shape"] = latent_shape

    if "autoencoder" in stages:
        torch.cuda.reset_peak_memory_stats()
        opt_g, opt_d = ae_module.configure_optimizers()
        batch = args.batch_ae or int(ae_cfg["train"]["batch_size"])
        x = torch.rand(batch, 1, *shape, device=dev)

        def ae_step():
            with autocast():
                loss, _, recon = ae_module.generator_losses(x)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            with autocast():
                loss_d = ae_module.discriminator_loss(x, recon)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

        record(
            "train_autoencoder",
            ae_step,
            batch,
            {"note": "generator + discriminator update; perceptual term off unless weights are configured"},
        )
        del opt_g, opt_d
    ae = ae_module.autoencoder.eval().requires_grad_(False)
    with torch.no_grad(), autocast():
        x1 = torch.rand(1, 1, *shape, device=dev)
        results["encode_seconds_per_scan"] = round(timed(lambda: ae.encode(x1), args.steps, args.warmup), 4)

    if "ldm" in stages:
        torch.cuda.reset_peak_memory_stats()
        ldm = L.LDMModule(ldm_cfg, latent_channels=latent_shape[0]).to(dev)
        opt = torch.optim.Adam(ldm.unet.parameters(), lr=ldm_cfg["lr"])
        batch = args.batch_ldm or int(ldm_cfg["train"]["batch_size"])
        lat = torch.randn(batch, *latent_shape, device=dev)

        def ldm_step():
            with autocast():
                loss = ldm.training_step({"latent": lat}, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        record("train_ldm", ldm_step, batch, {"parameters": sum(p.numel() for p in ldm.unet.parameters())})
        del ldm, opt

    if "ldae" in stages:
        torch.cuda.reset_peak_memory_stats()
        unet = build_ldm_unet({**ldm_cfg["network"], "latent_channels": latent_shape[0]}).requires_grad_(False).eval()
        module = D.LDAEModule(ldae_cfg, unet, DiffusionSchedule.from_config(ldm_cfg["diffusion"])).to(dev)
        opt = torch.optim.Adam(module.trainable_parameters(), lr=ldae_cfg["lr"])
        batch = args.batch_ldae or int(ldae_cfg["train"]["batch_size"])
        data = {
            "image": torch.rand(batch, 1, *shape, device=dev),
            "latent": torch.randn(batch, *latent_shape, device=dev),
        }

        def ldae_step():
            with autocast():
                loss = module.training_step(data, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        counts = D.parameter_counts(module)
        record(
            "train_ldae",
            ldae_step,
            batch,
            {"parameters_total": counts["total"], "parameters_trainable": counts["trainable"]},
        )
        del opt
        module.eval()

        def reconstruct():
            with torch.no_grad(), autocast():
                y = module.encoder(data["image"][:1])
                eps_fn = guided_eps_fn(module.estimator, y, module.schedule, ldae_cfg["guidance"])
                z = ddim_sample(eps_fn, torch.randn(1, *latent_shape, device=dev), module.schedule, 100)
                ae.decode(z)

        results["ldae_reconstruction_seconds_T100"] = round(timed(reconstruct, 3, 1), 2)
        results["paper_reconstruction_seconds_T100"] = 6.0

    files.write_json(args.out, results, trailing_newline=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
