"""Paper-size training on the CPU: seconds per step and peak memory of every stage, and one reconstruction per model.

Each stage runs in its own process, so its peak resident memory (ru_maxrss) is its own. In it, the stage's module at
the config's sizes (config.yaml, the paper: 128 x 160 x 128 images, the ~14M AutoencoderKL, the 486M LDM, the ~920M
LDAE, the ~130M voxel DAE; or config.yaml with an overlay, --config), batch 1, fp32 (what `precision: auto` is on a
CPU), 3-D weights and batches in the channels-last-3d layout (as training on a CPU), random tensors (timing and
memory do not depend on the values): --warmup + --steps training steps (forward + backward + Adam step; stage 1: a
generator AND a discriminator update), then one reconstruction of one scan in eval mode at --ddim-steps T:

* autoencoder: encode (posterior mean) + decode (no T);
* ldm: AE encode, DDIM inversion and DDIM decoding with the LDM alone (T steps each), AE decode (the LDDIM baseline);
* ldae: semantic encoder, AE encode, guided DDIM inversion + decoding (T each), AE decode (`LDAEPipeline.reconstruct`);
* dae: semantic encoder, DDIM inversion + decoding in image space at `dae.shape` (`DAEPipeline.reconstruct`).

The machine (CPU model, cores, memory, load average before and after each stage), torch, threads and all settings
are recorded beside the numbers in the JSON (default bench/results/paper_size_cpu.json).

    .venv/bin/python bench/training/paper_size_cpu.py                       # paper sizes: ~18 GiB, hours on 2 cores
    .venv/bin/python bench/training/paper_size_cpu.py --stages ldm,ldae --steps 2 --ddim-steps 5
    .venv/bin/python bench/training/paper_size_cpu.py --config tests/configs/ci.yaml --out /tmp/tiny.json  # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

warnings.filterwarnings("ignore")
STAGES = ("autoencoder", "ldm", "ldae", "dae")


# ------------------------------------------------------------------------------------------------ settings
from run import merged_config  # noqa: E402  (bench/training/run.py: config.yaml + an overlay, merged)


def ldae_api() -> SimpleNamespace:
    """Everything this script uses from the ldae package (ONE place: re-point here after refactors)."""
    from ldae import verbs
    from ldae.diffusion import DiffusionSchedule, ddim_invert, ddim_sample
    from ldae.models import build_autoencoder, build_ldm_unet, count_parameters, encode_mean
    from ldae.models.pipelines import DAEPipeline, LDAEPipeline
    from ldae.training import autoencoder as A
    from ldae.training import baselines as B
    from ldae.training import dae as DAE
    from ldae.training import ldae as D
    from ldae.training import ldm as L
    from ldae.training import stage

    def stage_configs(config: dict) -> dict:
        dae = verbs.section("dae", config.get("dae"))
        return {
            "images": config["images"],
            "autoencoder": verbs.section("autoencoder", config["autoencoder"]),
            "ldm": verbs.section("ldm", config["ldm"]),
            "ldae": verbs.section("ldae", config["ldae"]),
            "dae": dae,
            "dae_encoder": B.resolve_encoder(config["ldae"].get("encoder"), dae["encoder"]),
        }

    return SimpleNamespace(
        stage_configs=stage_configs,
        DiffusionSchedule=DiffusionSchedule,
        ddim_invert=ddim_invert,
        ddim_sample=ddim_sample,
        build_autoencoder=build_autoencoder,
        build_ldm_unet=build_ldm_unet,
        count_parameters=count_parameters,
        encode_mean=encode_mean,
        DAEPipeline=DAEPipeline,
        LDAEPipeline=LDAEPipeline,
        autoencoder_module=A.build_module,
        autoencoder_network=A.network_config,
        LDMModule=L.LDMModule,
        LDAEModule=D.LDAEModule,
        ldae_parameter_counts=D.parameter_counts,
        DAEModule=DAE.DAEModule,
        channels_last_=stage.cpu_channels_last_,
        cpu_fast=stage.cpu_fast,
    )


def stage_configs(config: dict) -> dict:
    """Each stage's resolved config section (+ images, the DAE's encoder) from a merged config."""
    return ldae_api().stage_configs(config)


def latent_shape(cfgs: dict) -> list[int]:
    """The AutoencoderKL's latent shape: latent_channels x image shape / 2^(levels - 1)."""
    net = cfgs["autoencoder"]["network"]
    factor = 2 ** (len(net["channels"]) - 1)
    return [int(net["latent_channels"]), *(int(s) // factor for s in cfgs["images"]["shape"])]


def machine() -> dict:
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        total_kb = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
        info["memory_gib"] = round(total_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info["cpu"] = platform.processor() or platform.machine()
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


# ------------------------------------------------------------------------------------------------ measuring
def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: KiB


def timed_steps(step, steps: int, warmup: int) -> dict:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(round(time.perf_counter() - start, 3))
    return {
        "seconds_per_step": round(sum(times) / len(times), 3),
        "step_seconds": times,
        "peak_rss_gib_after_training": peak_rss_gib(),
    }


def timed_once(fn) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    return round(time.perf_counter() - start, 3)


def optimiser_step(module, optimiser, batch) -> None:
    loss = module.training_step(batch, 0)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


class Clock:
    """Seconds and calls per labelled method, by wrapping instance methods (a module's ``forward``, a pipeline's
    ``semantic``): where a reconstruction's time goes (semantic encoder, AE, network evaluations)."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}

    def wrap(self, obj, method: str, label: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.seconds.setdefault(label, []).append(time.perf_counter() - start)
            return out

        object.__setattr__(obj, method, timed)

    def report(self) -> dict:
        return {
            label: {
                "seconds": round(sum(times), 3),
                "calls": len(times),
                "seconds_per_call": round(sum(times) / len(times), 3),
                "each": [round(t, 3) for t in times],
            }
            for label, times in self.seconds.items()
        }


def timed_reconstruction(reconstruct, clock: Clock, ddim_steps: int, description: str) -> dict:
    """One reconstruction (no grad), its total seconds and the clock's breakdown; the per-DDIM-step cost is the
    mean seconds of one network evaluation (``network_evaluation``: 2 x T calls, inversion + decoding)."""
    total = timed_once(reconstruct)
    parts = clock.report()
    out = {
        "reconstruction_seconds": total,
        "reconstruction_ddim_steps": ddim_steps,
        "reconstruction": description,
        "reconstruction_breakdown": parts,
    }
    if "network_evaluation" in parts:
        out["seconds_per_network_evaluation"] = parts["network_evaluation"]["seconds_per_call"]
    return out


def fresh_autoencoder(cfgs: dict, api):
    return api.channels_last_(api.build_autoencoder(api.autoencoder_network(cfgs["autoencoder"])).eval())


def image_batch(cfgs: dict, api) -> torch.Tensor:
    return api.cpu_fast(torch.rand(1, 1, *cfgs["images"]["shape"]))


# ---------------------------------------------------------------------------------------------- the stages
def run_autoencoder(cfgs: dict, args, api) -> dict:
    module, _, status = api.autoencoder_module(cfgs["autoencoder"])
    api.channels_last_(module)
    x = image_batch(cfgs, api)
    out = {
        "parameters": api.count_parameters(module.autoencoder),
        "discriminator_parameters": api.count_parameters(module.discriminator),
        "perceptual_enabled": status["perceptual_enabled"],
    }
    if "train" in args.parts:
        opt_g, opt_d = module.configure_optimizers()

        def step():
            loss, _, recon = module.generator_losses(x)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            if module.w["adversarial"] > 0:
                loss_d = module.discriminator_loss(x, recon)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()

        out.update(
            timed_steps(step, args.steps, args.warmup),
            step="generator + discriminator update" if module.w["adversarial"] > 0 else "generator update",
        )
    if "reconstruct" in args.parts:
        ae = module.autoencoder.eval()
        clock = Clock()
        clock.wrap(ae, "encode", "ae_encode")
        clock.wrap(ae, "decode", "ae_decode")
        z = []
        out.update(
            timed_reconstruction(
                lambda: z.append(ae.decode(api.encode_mean(ae, x))), clock, 0, "encode (posterior mean) + decode"
            )
        )
        out["encode_seconds"] = out["reconstruction_breakdown"]["ae_encode"]["seconds"]
    return out


def run_ldm(cfgs: dict, args, api) -> dict:
    shape = latent_shape(cfgs)
    module = api.channels_last_(api.LDMModule(cfgs["ldm"], latent_channels=shape[0]))
    out = {"parameters": api.count_parameters(module.unet), "latent_shape": shape}
    if "train" in args.parts:
        optimiser = module.configure_optimizers()
        batch = {"latent": torch.randn(1, *shape)}
        out.update(timed_steps(lambda: optimiser_step(module, optimiser, batch), args.steps, args.warmup))
    if "reconstruct" in args.parts:
        module.eval()
        ae, x, clock = fresh_autoencoder(cfgs, api), image_batch(cfgs, api), Clock()
        clock.wrap(ae, "encode", "ae_encode")
        clock.wrap(ae, "decode", "ae_decode")
        clock.wrap(module.unet, "forward", "network_evaluation")

        def reconstruct():
            z = api.encode_mean(ae, x)
            x_T = api.ddim_invert(module.eps, z, module.schedule, args.ddim_steps)
            ae.decode(api.ddim_sample(module.eps, x_T, module.schedule, args.ddim_steps))

        out.update(
            timed_reconstruction(
                reconstruct,
                clock,
                args.ddim_steps,
                f"AE encode, LDM-only DDIM inversion + decoding ({args.ddim_steps} steps each), AE decode",
            )
        )
    return out


def run_ldae(cfgs: dict, args, api) -> dict:
    shape = latent_shape(cfgs)
    frozen = api.build_ldm_unet({**cfgs["ldm"]["network"], "latent_channels": shape[0]}).requires_grad_(False)
    module = api.LDAEModule(cfgs["ldae"], frozen.eval(), api.DiffusionSchedule.from_config(cfgs["ldm"]["diffusion"]))
    api.channels_last_(module)
    counts = api.ldae_parameter_counts(module)
    out = {"parameters": counts["total"], "trainable_parameters": counts["trainable"], "latent_shape": shape}
    x = image_batch(cfgs, api)
    if "train" in args.parts:
        optimiser = module.configure_optimizers()
        batch = {"image": x, "latent": torch.randn(1, *shape)}
        out.update(timed_steps(lambda: optimiser_step(module, optimiser, batch), args.steps, args.warmup))
    if "reconstruct" in args.parts:
        pipe = api.LDAEPipeline(
            fresh_autoencoder(cfgs, api),
            module.estimator,
            module.encoder,
            module.schedule,
            1.0,
            cfgs["ldae"]["guidance"],
        )
        clock = Clock()
        for method, label in (("semantic", "semantic_encoder"), ("latent", "ae_encode"), ("decode", "ae_decode")):
            clock.wrap(pipe, method, label)
        clock.wrap(module.estimator, "forward", "network_evaluation")
        out.update(
            timed_reconstruction(
                lambda: pipe.reconstruct(x, args.ddim_steps),
                clock,
                args.ddim_steps,
                f"semantic encoder, AE encode, guided DDIM inversion + decoding "
                f"({args.ddim_steps} steps each; one network evaluation = frozen LDM + "
                "trainable branch), AE decode (LDAEPipeline.reconstruct)",
            )
        )
    return out


def run_dae(cfgs: dict, args, api) -> dict:
    module = api.channels_last_(api.DAEModule(cfgs["dae"], cfgs["dae_encoder"]))
    out = {"parameters": api.count_parameters(module.dae), "dae_shape": list(module.shape or cfgs["images"]["shape"])}
    x = image_batch(cfgs, api)
    if "train" in args.parts:
        optimiser = module.configure_optimizers()
        out.update(timed_steps(lambda: optimiser_step(module, optimiser, {"image": x}), args.steps, args.warmup))
    if "reconstruct" in args.parts:
        pipe = api.DAEPipeline(module.dae, module.schedule, module.shape, module.signed)
        clock = Clock()
        clock.wrap(module.dae, "encode", "semantic_encoder")
        clock.wrap(module.dae, "forward", "network_evaluation")
        out.update(
            timed_reconstruction(
                lambda: pipe.reconstruct(x, args.ddim_steps),
                clock,
                args.ddim_steps,
                f"semantic encoder, image-space DDIM inversion + decoding "
                f"({args.ddim_steps} steps each) (DAEPipeline.reconstruct)",
            )
        )
    return out


def child(args) -> int:
    """One stage in this process; its result (JSON) to --child-out."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    api = ldae_api()
    cfgs = api.stage_configs(merged_config(args.config))
    result = {"load_average_before": [round(v, 2) for v in os.getloadavg()], "rss_gib_after_imports": peak_rss_gib()}
    result.update(globals()[f"run_{args.child}"](cfgs, args, api))
    result.update(peak_rss_gib=peak_rss_gib(), load_average_after=[round(v, 2) for v in os.getloadavg()])
    Path(args.child_out).write_text(json.dumps(result, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------------- main
def run_stage(name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--child-out",
            str(out),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--ddim-steps",
            str(args.ddim_steps),
            "--threads",
            str(args.threads),
            "--parts",
            args.parts,
        ] + (["--config", args.config] if args.config else [])
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = round(time.perf_counter() - started, 1)
        if proc.returncode != 0 or not out.is_file():  # e.g. -9: killed for memory
            return {
                "failed": True,
                "returncode": proc.returncode,
                "wall_seconds": wall,
                "stderr_tail": proc.stderr[-2000:],
                "settings": stage_settings(args),
            }
        return {**json.loads(out.read_text()), "wall_seconds": wall, "settings": stage_settings(args)}


def stage_settings(args) -> dict:
    return {
        "parts": args.parts,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "reconstruction_ddim_steps": args.ddim_steps,
        "threads": args.threads,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="",
        help="overlay on config.yaml (e.g. tests/configs/ci.yaml); default: config.yaml alone, the paper sizes",
    )
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per stage")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before them")
    parser.add_argument("--ddim-steps", type=int, default=10, help="T of the reconstructions (each direction)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--parts",
        default="train,reconstruct",
        help="train (the training steps), reconstruct (one reconstruction), or both",
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other stages already in --out (one stage per invocation)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results/paper_size_cpu.json"))
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    parts = set(args.parts.split(","))
    if not parts or parts - {"train", "reconstruct"}:
        parser.error("--parts: train, reconstruct or train,reconstruct")
    if unknown or args.steps < 1 or args.warmup < 0 or args.ddim_steps < 1:
        parser.error(f"--stages from {STAGES} (unknown: {unknown}), --steps >= 1, --warmup >= 0, --ddim-steps >= 1")

    cfgs = stage_configs(merged_config(args.config))
    previous = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else {}
    results = {
        "machine": machine(),
        "settings": {
            "config": args.config or "config.yaml (paper sizes)",
            "batch_size": 1,
            "precision": "32-true",
            "device": "cpu",
            "per_stage": "each stage's own `settings` (parts, steps, T, threads)",
            "image_shape": list(cfgs["images"]["shape"]),
            "latent_shape": latent_shape(cfgs),
            "one_process_per_stage": True,
        },
        "stages": previous.get("stages", {}),
    }
    for name in stages:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results["stages"][name] = run_stage(name, args)
        print(name, json.dumps(results["stages"][name]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    failed = [name for name, entry in results["stages"].items() if entry.get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
