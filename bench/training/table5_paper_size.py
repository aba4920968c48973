"""Table 5 at the paper sizes on one device: LDAE vs the voxel DAE, seconds per reconstruction and FLOPs.

Two parts, both at the config's sizes (config.yaml alone: the paper's 128 x 160 x 128 images, ~920M LDAE, ~130M DAE):

* FLOPs per network evaluation (``torch.utils.flop_counter.FlopCounterMode`` on FakeTensors: no memory, no time):
  the AE encoder and decoder, the semantic encoder (2.5-D ConvNeXt-Small, at the LDAE's and at the DAE's
  resolution), the LDAE's DDIM network evaluation (frozen LDM + trainable branch from one shared frozen encoder
  pass, ``estimator(..., return_eps=True)`` as the guided DDIM calls it), the LDM alone, the DAE's image U-Net;
  and the FLOPs of one full reconstruction at T and at the paper's T = 100. FlopCounterMode counts matrix products
  and convolutions (2 FLOPs per multiply-add) and attention, not normalisations or element-wise ops.
* Measured seconds (``--measure``), fp32 on the CPU, in ONE process, the same threads, random weights (time does
  not depend on the values): both pipelines built side by side, one untimed network evaluation each (warm-up), then
  one LDAE reconstruction (``LDAEPipeline.reconstruct``: semantic encoder, AE encode, guided DDIM inversion and
  decoding, T steps each, AE decode) and one DAE reconstruction (``DAEPipeline.reconstruct``), each with the time
  of every part. The ratio of whole reconstructions depends on T (fixed costs: AE, encoder); the ratio of ONE
  network evaluation (one DDIM step) is what carries over to any T.

    .venv/bin/python bench/training/table5_paper_size.py --measure --ddim-steps 2   # -> bench/results/ JSON
    .venv/bin/python bench/training/table5_paper_size.py                             # FLOPs only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

warnings.filterwarnings("ignore")
PAPER_T = 100


def bench_api() -> SimpleNamespace:
    """The ldae internals (through paper_size_cpu.ldae_api, the ONE place they are imported) and bench helpers."""
    import memory_model
    import paper_size_cpu
    from run import merged_config

    api = paper_size_cpu.ldae_api()
    return SimpleNamespace(
        api=api,
        configs=lambda overlay: api.stage_configs(merged_config(overlay)),
        latent_shape=paper_size_cpu.latent_shape,
        machine=paper_size_cpu.machine,
        Clock=paper_size_cpu.Clock,
        peak_rss_gib=paper_size_cpu.peak_rss_gib,
        no_weight_init=memory_model.no_weight_init,
        real_schedules=lambda: memory_model.real_schedules(api.DiffusionSchedule),
    )


def build_models(cfgs: dict, api) -> SimpleNamespace:
    """AE, LDAE (semantic encoder + gradient estimator with the frozen LDM), DAE, in eval mode."""
    latent = api_latent(cfgs)
    frozen = api.build_ldm_unet({**cfgs["ldm"]["network"], "latent_channels": latent[0]}).requires_grad_(False)
    schedule = api.DiffusionSchedule.from_config(cfgs["ldm"]["diffusion"])
    ldae = api.LDAEModule(cfgs["ldae"], frozen.eval(), schedule).eval()
    dae = api.DAEModule(cfgs["dae"], cfgs["dae_encoder"]).eval()
    ae = api.build_autoencoder(api.autoencoder_network(cfgs["autoencoder"])).eval()
    return SimpleNamespace(ae=ae, ldae=ldae, dae=dae, schedule=schedule)


def api_latent(cfgs: dict) -> list[int]:
    net = cfgs["autoencoder"]["network"]
    factor = 2 ** (len(net["channels"]) - 1)
    return [int(net["latent_channels"]), *(int(s) // factor for s in cfgs["images"]["shape"])]


# --------------------------------------------------------------------------------------------------- FLOPs
def network_calls(models, cfgs: dict) -> dict:
    """label -> a call of ONE network evaluation at batch 1 (inputs made inside the caller's mode)."""
    image, latent = list(cfgs["images"]["shape"]), api_latent(cfgs)
    dae_shape = list(models.dae.shape or image)
    y_dim = int(models.ldae.estimator.y_dim)
    t = lambda: torch.tensor([500])  # noqa: E731
    return {
        "ae_encoder": lambda: models.ae.encode(torch.rand(1, 1, *image)),
        "ae_decoder": lambda: models.ae.decode(torch.randn(1, *latent)),
        "semantic_encoder": lambda: models.ldae.encoder(torch.rand(1, 1, *image)),
        "semantic_encoder_at_dae_shape": lambda: models.dae.dae.encode(torch.rand(1, 1, *dae_shape)),
        "ldae_network_evaluation": lambda: models.ldae.estimator(
            torch.randn(1, *latent), t(), torch.randn(1, y_dim), return_eps=True
        ),
        "ldm_network_evaluation": lambda: models.ldae.estimator.ldm(torch.randn(1, *latent), t()),
        "dae_network_evaluation": lambda: models.dae.dae(
            torch.rand(1, 1, *dae_shape), t(), torch.randn(1, int(models.dae.dae.y_dim))
        ),
    }


def count_flops(cfgs: dict, b) -> dict:
    with FakeTensorMode(allow_non_fake_inputs=True), b.real_schedules():
        with b.no_weight_init():
            models = build_models(cfgs, b.api)
        flops = {}
        for label, call in network_calls(models, cfgs).items():
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                call()
            flops[label] = int(counter.get_total_flops())
    return flops


def reconstruction_flops(flops: dict, steps: int) -> dict:
    """FLOPs of one full reconstruction at T = ``steps`` (2T network evaluations: inversion + decoding)."""
    ldae = (
        flops["semantic_encoder"]
        + flops["ae_encoder"]
        + 2 * steps * flops["ldae_network_evaluation"]
        + flops["ae_decoder"]
    )
    dae = flops["semantic_encoder_at_dae_shape"] + 2 * steps * flops["dae_network_evaluation"]
    return {"ldae": ldae, "dae": dae, "dae_over_ldae": round(dae / ldae, 2)}


# ------------------------------------------------------------------------------------------------ seconds
@torch.no_grad()
def measure(cfgs: dict, b, steps: int) -> dict:
    api = b.api
    models = build_models(cfgs, api)
    for module in (models.ae, models.ldae, models.dae):
        api.channels_last_(module)
    ldae = api.LDAEPipeline(
        models.ae, models.ldae.estimator, models.ldae.encoder, models.schedule, 1.0, cfgs["ldae"]["guidance"]
    )
    dae = api.DAEPipeline(models.dae.dae, models.dae.schedule, models.dae.shape, models.dae.signed)
    x = api.cpu_fast(torch.rand(1, 1, *cfgs["images"]["shape"]))
    calls = network_calls(models, cfgs)
    warm = {}
    for label in ("ldae_network_evaluation", "dae_network_evaluation"):  # untimed in the reconstructions
        start = time.perf_counter()
        calls[label]()
        warm[label] = round(time.perf_counter() - start, 3)
    out = {"warmup_seconds": warm, "rss_gib_after_build": b.peak_rss_gib()}
    if steps == 0:  # network evaluations only: the per-DDIM-step cost, 2 timed calls each
        for name in ("ldae", "dae"):
            times = []
            for _ in range(2):
                start = time.perf_counter()
                calls[f"{name}_network_evaluation"]()
                times.append(round(time.perf_counter() - start, 3))
            out[name] = {
                "network_evaluation_seconds": times,
                "seconds_per_network_evaluation": round(sum(times) / 2, 3),
            }
        out["peak_rss_gib"] = b.peak_rss_gib()
        out["dae_over_ldae_per_network_evaluation"] = round(
            out["dae"]["seconds_per_network_evaluation"] / out["ldae"]["seconds_per_network_evaluation"], 2
        )
        return out
    for name, pipe, wraps in (
        (
            "ldae",
            ldae,
            [
                (ldae, "semantic", "semantic_encoder"),
                (ldae, "latent", "ae_encode"),
                (ldae, "decode", "ae_decode"),
                (models.ldae.estimator, "forward", "network_evaluation"),
            ],
        ),
        (
            "dae",
            dae,
            [(models.dae.dae, "encode", "semantic_encoder"), (models.dae.dae, "forward", "network_evaluation")],
        ),
    ):
        clock = b.Clock()
        for obj, method, label in wraps:
            clock.wrap(obj, method, label)
        start = time.perf_counter()
        pipe.reconstruct(x, steps)
        parts = clock.report()
        out[name] = {
            "reconstruction_seconds": round(time.perf_counter() - start, 3),
            "breakdown": parts,
            "seconds_per_network_evaluation": parts["network_evaluation"]["seconds_per_call"],
        }
    out["peak_rss_gib"] = b.peak_rss_gib()
    out[f"extrapolated_T{PAPER_T}"] = extrapolate(out, steps, PAPER_T)
    out["dae_over_ldae_reconstruction"] = round(
        out["dae"]["reconstruction_seconds"] / out["ldae"]["reconstruction_seconds"], 2
    )
    out["dae_over_ldae_per_network_evaluation"] = round(
        out["dae"]["seconds_per_network_evaluation"] / out["ldae"]["seconds_per_network_evaluation"], 2
    )
    return out


def extrapolate(measured: dict, steps: int, target: int) -> dict:
    """Seconds at T = ``target`` from the measured parts: everything but the network evaluations once, plus
    2 x target evaluations at the measured mean (a model: assumes the per-step cost does not depend on T)."""
    out = {}
    for name in ("ldae", "dae"):
        m = measured[name]
        fixed = m["reconstruction_seconds"] - m["breakdown"]["network_evaluation"]["seconds"]
        out[name] = round(fixed + 2 * target * m["seconds_per_network_evaluation"], 1)
    out["dae_over_ldae"] = round(out["dae"] / out["ldae"], 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="", help="overlay on config.yaml (default: the paper sizes)")
    parser.add_argument("--measure", action="store_true", help="also time one reconstruction of each (fp32, CPU)")
    parser.add_argument(
        "--ddim-steps",
        type=int,
        default=2,
        help="T of the measured reconstructions; 0: time 2 network evaluations of each only",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/table5_paper_size.json"))
    args = parser.parse_args(argv)
    if args.ddim_steps < 0:
        parser.error("--ddim-steps >= 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = bench_api()
    cfgs = b.configs(args.config)
    flops = count_flops(cfgs, b)
    result = {
        "config": args.config or "config.yaml (paper sizes)",
        "image_shape": list(cfgs["images"]["shape"]),
        "latent_shape": api_latent(cfgs),
        "dae_shape": list(cfgs["dae"]["shape"] or cfgs["images"]["shape"]),
        "flops_per_network_evaluation": flops,
        "gflops_per_network_evaluation": {k: round(v / 1e9, 1) for k, v in flops.items()},
        "dae_over_ldae_flops_per_network_evaluation": round(
            flops["dae_network_evaluation"] / flops["ldae_network_evaluation"], 2
        ),
        "reconstruction_flops": {
            f"T={t}": reconstruction_flops(flops, t) for t in sorted({max(args.ddim_steps, 1), PAPER_T})
        },
        "paper": {"ldae_seconds_T100_A100": 6, "dae_seconds_T100_A100": 120, "ratio": 20},
    }
    if args.measure:
        result["machine"] = b.machine()
        result["settings"] = {
            "precision": "fp32",
            "device": "cpu",
            "threads": args.threads,
            "batch_size": 1,
            "ddim_steps": args.ddim_steps,
            "weights": "random (time does not depend on them)",
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        }
        result["measured"] = measure(cfgs, b, args.ddim_steps)
        result["settings"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
