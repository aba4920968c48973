"""Training memory of every stage at any batch size, without allocating it: a model, checked against measured runs.

What is COUNTED (exactly, for our modules at the config's sizes): the bytes of the tensors autograd saves for the
backward pass during one training forward (``torch.autograd.graph.saved_tensors_hooks``, every distinct storage
once, parameters excluded), with every tensor a FakeTensor (``torch._subclasses.FakeTensorMode``: shapes and dtypes,
no data, so the 920M LDAE at batch 64 costs nothing), at batch 1 and 2 (activation bytes are linear in the batch:
``fixed + batch x per_sample``), in fp32 and under bf16 autocast. The autocast is the CPU's (fake CUDA tensors
need a CUDA build) with the CUDA policy's fp32 ops emulated: group_norm, layer_norm and softmax run in fp32 on a
float input and return fp32, as ``torch.autocast("cuda", torch.bfloat16)`` does (convolutions and matmuls save
their bf16 operands; the autocast cache's bf16 weight copies are saved tensors, so they are counted).

What is MODELLED (stated, not measured): fp32 master weights of every network (trainable and frozen), fp32 gradients
and the two Adam moments of the trainable ones, the EMA copy (Lightning's WeightAveraging deep-copies the WHOLE
LightningModule, frozen parts included), plus a transient allowance (gradients of activations and workspace live
during backward: ``transient_fraction`` x the saved bytes; calibrated on the measured CPU runs when given, else
0.25) and, on a GPU, 1 GiB for the CUDA context (outside torch's allocator) and 8 % of the GPU for the caching
allocator's fragmentation and the cuDNN/cuBLAS workspaces: a batch fits if live peak + 1 GiB <= 0.92 x the GPU.

Stage 1 is counted with the LPIPS term (a random SqueezeNet written to a temporary file stands in for the weights;
the sizes are the same) and without it (as the CPU benchmark runs it: no local weights); its peak is the larger of
the generator update (AE forward + LPIPS + discriminator on the reconstruction) and the discriminator update.

    .venv/bin/python bench/training/memory_model.py                     # -> bench/results/memory_model.json
    .venv/bin/python bench/training/memory_model.py --measured bench/results/paper_size_cpu.json  # + validation
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

warnings.filterwarnings("ignore")
GIB = 2**30
STAGES = ("autoencoder", "ldm", "ldae", "dae")
# usable memory of the paper's GPUs (A100 40GB: 40,536 MiB visible; 80GB: 81,920 MiB)
GPUS = {"40GB": 40536 * 2**20, "80GB": 81920 * 2**20}
GPU_ALLOWANCE = int(1.0 * GIB)  # CUDA context and library handles, outside torch's allocator
GPU_MARGIN = 0.08  # share of the GPU kept for the caching allocator's fragmentation and cuDNN/cuBLAS workspaces
DEFAULT_TRANSIENT = 0.25


# ------------------------------------------------------------------------------ the ldae internals (ONE place)
def ldae_api() -> SimpleNamespace:
    """The ldae internals, through paper_size_cpu.ldae_api (the ONE place bench/training imports them)."""
    import paper_size_cpu
    from run import merged_config

    api = paper_size_cpu.ldae_api()
    return SimpleNamespace(
        real_schedules=lambda: real_schedules(api.DiffusionSchedule),
        configs=lambda overlay: api.stage_configs(merged_config(overlay)),
        latent_shape=paper_size_cpu.latent_shape,
        autoencoder_module=lambda cfg: api.autoencoder_module(cfg)[0],
        build_ldm_unet=api.build_ldm_unet,
        ldm_module=api.LDMModule,
        ldae_module=api.LDAEModule,
        dae_module=api.DAEModule,
        schedule=lambda cfg: api.DiffusionSchedule.from_config(cfg),
    )


@contextlib.contextmanager
def real_schedules(schedule_class):
    """Diffusion schedules (small; their checks read data) built outside the fake mode."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    original = schedule_class.__dict__["from_config"]

    def real(cls, cfg=None):
        with unset_fake_temporarily():
            return original.__func__(cls, cfg)

    schedule_class.from_config = classmethod(real)
    try:
        yield
    finally:
        schedule_class.from_config = original


# ---------------------------------------------------------------------------------------------- counting
@contextlib.contextmanager
def cuda_autocast_policy(enabled: bool):
    """bf16 autocast (CPU kernels, fake tensors) with the CUDA policy's fp32 norms and softmax emulated."""
    if not enabled:
        yield
        return
    originals = {name: getattr(F, name) for name in ("group_norm", "layer_norm", "softmax")}

    def fp32(fn):
        def wrapped(x, *args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
                kwargs = {
                    k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                    for k, v in kwargs.items()
                }
                return fn(x.float(), *args, **kwargs)

        return wrapped

    try:
        for name, fn in originals.items():
            setattr(F, name, fp32(fn))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)


@contextlib.contextmanager
def no_weight_init():
    """torch.nn.init's in-place initialisers as no-ops (values do not matter; some check data, which fakes lack)."""
    originals = {
        name: fn
        for name, fn in vars(torch.nn.init).items()
        if name.endswith("_") and callable(fn) and not name.startswith("_")
    }
    try:
        for name in originals:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.nn.init, name, fn)


def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def saved_tensor_bytes(forward, parameters, bf16: bool = False) -> dict:
    """Bytes of the distinct storages autograd saves during ``forward()`` (parameters' own storages excluded)."""
    param_keys = {storage_key(p) for p in parameters}
    saved: dict[int, tuple[int, torch.dtype]] = {}
    keep = []

    def pack(t):
        key = storage_key(t)
        if key not in param_keys:
            saved[key] = (t.untyped_storage().nbytes(), t.dtype)
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cuda_autocast_policy(bf16):
        forward()
    by_dtype: dict[str, int] = {}
    for nbytes, dtype in saved.values():
        by_dtype[str(dtype).replace("torch.", "")] = by_dtype.get(str(dtype).replace("torch.", ""), 0) + nbytes
    return {"bytes": sum(by_dtype.values()), "tensors": len(saved), "bytes_by_dtype": by_dtype}


def count_params(params) -> int:
    seen, total = set(), 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ------------------------------------------------------------------------------------------- the stages
def squeezenet_file(tmp: Path) -> str:
    """A random torchvision squeezenet1_1 state dict: the LPIPS term's sizes without its (never downloaded) weights."""
    import torchvision

    path = tmp / "squeezenet1_1_random.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return str(path)


def build_stage(name: str, cfgs: dict, api, perceptual_weights: str = "") -> dict:
    """The stage's module(s) (inside the caller's FakeTensorMode), parameters by role and the training passes:
    {"trainable": [...], "frozen": [...], "ema": bool, "passes": {label: fn(batch_size)}}."""
    image = list(cfgs["images"]["shape"])
    latent = api.latent_shape(cfgs)
    if name == "autoencoder":
        cfg = copy.deepcopy(cfgs["autoencoder"])
        cfg["perceptual_weights"] = perceptual_weights
        module = api.autoencoder_module(cfg)
        frozen = list(module.perceptual.parameters()) if module.perceptual is not None else []

        def generator(b):
            return module.generator_losses(torch.rand(b, 1, *image))[0]

        def discriminator(b):
            x = torch.rand(b, 1, *image)
            return module.discriminator_loss(x, torch.rand(b, 1, *image))

        passes = {"generator": generator}
        if module.w["adversarial"] > 0:
            passes["discriminator"] = discriminator
        return {
            "trainable": list(module.parameters()),
            "frozen": frozen,
            "ema": cfg["ema_decay"] > 0,
            "passes": passes,
            "module": module,
        }
    if name == "ldm":
        module = api.ldm_module(cfgs["ldm"], latent_channels=latent[0])
        return {
            "trainable": list(module.parameters()),
            "frozen": [],
            "ema": cfgs["ldm"]["ema_decay"] > 0,
            "passes": {"training_step": lambda b: module.training_step({"latent": torch.randn(b, *latent)}, 0)},
            "module": module,
        }
    if name == "ldae":
        unet = api.build_ldm_unet({**cfgs["ldm"]["network"], "latent_channels": latent[0]}).requires_grad_(False)
        module = api.ldae_module(cfgs["ldae"], unet, api.schedule(cfgs["ldm"]["diffusion"]))
        trainable = module.trainable_parameters()
        frozen = list(module.estimator.ldm.parameters())
        return {
            "trainable": trainable,
            "frozen": frozen,
            "ema": cfgs["ldae"]["ema_decay"] > 0,
            "module": module,
            "passes": {
                "training_step": lambda b: module.training_step(
                    {"image": torch.rand(b, 1, *image), "latent": torch.randn(b, *latent)}, 0
                )
            },
        }
    if name == "dae":
        module = api.dae_module(cfgs["dae"], cfgs["dae_encoder"])
        return {
            "trainable": list(module.parameters()),
            "frozen": [],
            "ema": cfgs["dae"]["ema_decay"] > 0,
            "module": module,
            "passes": {"training_step": lambda b: module.training_step({"image": torch.rand(b, 1, *image)}, 0)},
        }
    raise ValueError(f"unknown stage {name!r}; one of {STAGES}")


def count_stage(name: str, cfgs: dict, api, perceptual_weights: str = "", batches=(1, 2, 4)) -> dict:
    """Parameters by role and saved-activation bytes (fp32, bf16) per pass at ``batches``: fixed + per-sample from
    the first two, checked at the others."""
    with FakeTensorMode(allow_non_fake_inputs=True), api.real_schedules():
        torch.manual_seed(0)
        with no_weight_init():
            spec = build_stage(name, cfgs, api, perceptual_weights)
        spec["module"].train()
        params = [*spec["trainable"], *spec["frozen"]]
        passes = {}
        for label, fn in spec["passes"].items():
            entry = {}
            for precision in ("fp32", "bf16"):
                counts = {
                    b: saved_tensor_bytes(lambda fn=fn, b=b: fn(b), params, bf16=precision == "bf16") for b in batches
                }
                b1, b2 = batches[0], batches[1]
                per_sample = (counts[b2]["bytes"] - counts[b1]["bytes"]) / (b2 - b1)
                fixed = counts[b1]["bytes"] - b1 * per_sample
                entry[precision] = {
                    "per_sample_bytes": int(per_sample),
                    "fixed_bytes": int(fixed),
                    "at_batch": {str(b): c for b, c in counts.items()},
                }
                for b in batches[2:]:  # the linear fit checked at a larger batch
                    entry[precision][f"linear_fit_error_percent_at_batch_{b}"] = round(
                        100 * (fixed + b * per_sample - counts[b]["bytes"]) / counts[b]["bytes"], 3
                    )
            passes[label] = entry
    trainable = count_params(spec["trainable"])
    frozen = count_params(p for p in spec["frozen"] if all(p is not q for q in spec["trainable"]))
    return {"trainable_parameters": trainable, "frozen_parameters": frozen, "ema": bool(spec["ema"]), "passes": passes}


# ------------------------------------------------------------------------------------------------- model
def persistent_bytes(stage: dict, ema: bool | None = None, ddp: bool = False) -> dict:
    """fp32 weights (all) + grads and Adam moments (trainable) + EMA copy of the whole module (when on) + DDP's
    gradient buckets (one more fp32 copy of the trainable gradients, with more than one GPU)."""
    trainable, frozen = stage["trainable_parameters"], stage["frozen_parameters"]
    ema = stage["ema"] if ema is None else ema
    parts = {
        "weights": 4 * (trainable + frozen),
        "gradients": 4 * trainable,
        "adam": 8 * trainable,
        "ema": 4 * (trainable + frozen) if ema else 0,
        "ddp_buckets": 4 * trainable if ddp else 0,
    }
    return {**parts, "total": sum(parts.values())}


def activation_bytes(stage: dict, precision: str, batch: int) -> int:
    """The largest pass's saved bytes at ``batch`` (stage 1: generator or discriminator update)."""
    return max(p[precision]["fixed_bytes"] + batch * p[precision]["per_sample_bytes"] for p in stage["passes"].values())


def modelled_peak(
    stage: dict, precision: str, batch: int, transient: float, ema: bool | None = None, ddp: bool = False
) -> int:
    return int(persistent_bytes(stage, ema, ddp)["total"] + (1 + transient) * activation_bytes(stage, precision, batch))


def fits(peak: int, capacity: int) -> bool:
    """The modelled live peak + the CUDA context within the GPU less the fragmentation/workspace margin."""
    return peak + GPU_ALLOWANCE <= (1 - GPU_MARGIN) * capacity


def max_batch(stage: dict, capacity: int, transient: float, precision: str = "bf16", ddp: bool = False) -> int:
    """Largest per-GPU batch whose modelled peak :func:`fits` ``capacity`` (0: not even batch 1)."""
    batch = 0
    while batch < 4096 and fits(modelled_peak(stage, precision, batch + 1, transient, ddp=ddp), capacity):
        batch += 1
    return batch


def validate(stages: dict, measured: dict) -> dict:
    """Model vs the fp32 batch-1 CPU runs (paper_size_cpu.json): modelled = RSS after imports + persistent (no EMA:
    the benchmark has no EMA callback) + saved activations (+ transient). Returns per stage the residual the
    transient term must explain and the % agreement without and with the calibrated transient fraction."""
    rows = {}
    for name, run in measured.get("stages", {}).items():
        if name not in stages or run.get("failed") or "peak_rss_gib_after_training" not in run:
            continue
        stage = stages[name]
        base = run["rss_gib_after_imports"] * GIB
        persistent = persistent_bytes(stage, ema=False)["total"]
        act = activation_bytes(stage, "fp32", 1)
        peak = run["peak_rss_gib_after_training"] * GIB
        rows[name] = {
            "measured_peak_rss_gib": round(peak / GIB, 2),
            "rss_after_imports_gib": round(base / GIB, 2),
            "persistent_gib": round(persistent / GIB, 2),
            "saved_activations_gib": round(act / GIB, 2),
            "model_without_transient_gib": round((base + persistent + act) / GIB, 2),
            "transient_fraction": round((peak - base - persistent - act) / act, 3) if act else None,
        }
    fractions = [r["transient_fraction"] for r in rows.values() if r["transient_fraction"] is not None]
    calibrated = max(0.0, sum(fractions) / len(fractions)) if fractions else None
    for name, row in rows.items():
        stage = stages[name]
        base, peak = row["rss_after_imports_gib"] * GIB, row["measured_peak_rss_gib"] * GIB
        for label, frac in (("without_transient", 0.0), ("calibrated", calibrated)):
            if frac is None:
                continue
            model = base + modelled_peak(stage, "fp32", 1, frac, ema=False)
            row[f"model_{label}_gib"] = round(model / GIB, 2)
            row[f"error_{label}_percent"] = round(100 * (model - peak) / peak, 1)
    return {"per_stage": rows, "calibrated_transient_fraction": calibrated}


def plan(stages: dict, transient: float) -> dict:
    """Per stage and GPU size: largest bf16 batch per GPU and the modelled peak at it, on one GPU and under DDP."""
    out = {}
    for name, stage in stages.items():
        out[name] = {
            "persistent_gib": round(persistent_bytes(stage)["total"] / GIB, 2),
            "persistent_gib_ddp": round(persistent_bytes(stage, ddp=True)["total"] / GIB, 2),
            "bf16_activation_gib_per_sample": round(
                max(p["bf16"]["per_sample_bytes"] for p in stage["passes"].values()) / GIB, 3
            ),
            "fp32_activation_gib_per_sample": round(
                max(p["fp32"]["per_sample_bytes"] for p in stage["passes"].values()) / GIB, 3
            ),
        }
        for gpu, capacity in GPUS.items():
            for ddp, suffix in ((False, ""), (True, "_ddp")):
                batch = max_batch(stage, capacity, transient, ddp=ddp)
                out[name][f"max_batch_bf16_{gpu}{suffix}"] = batch
                if batch:
                    out[name][f"peak_gib_at_max_batch_{gpu}{suffix}"] = round(
                        modelled_peak(stage, "bf16", batch, transient, ddp=ddp) / GIB, 1
                    )
    return out


def gib_view(stage: dict) -> dict:
    """The counted numbers in GiB for reading (the JSON keeps the bytes too)."""
    return {
        label: {
            prec: {
                "per_sample_gib": round(v["per_sample_bytes"] / GIB, 3),
                "fixed_gib": round(v["fixed_bytes"] / GIB, 3),
            }
            for prec, v in p.items()
        }
        for label, p in stage["passes"].items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="", help="overlay on config.yaml (default: the paper sizes)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--measured", default="", help="paper_size_cpu.json to validate against (fp32, batch 1)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/memory_model.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    api = ldae_api()
    cfgs = api.configs(args.config)
    stages, stages_as_cpu_run = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        lpips = squeezenet_file(Path(tmp))
        for name in [s for s in args.stages.split(",") if s]:
            print(f"counting {name} ...", file=sys.stderr, flush=True)
            stages[name] = count_stage(name, cfgs, api, perceptual_weights=lpips)
            stages_as_cpu_run[name] = count_stage(name, cfgs, api) if name == "autoencoder" else stages[name]
    result = {
        "config": args.config or "config.yaml (paper sizes)",
        "image_shape": list(cfgs["images"]["shape"]),
        "latent_shape": api.latent_shape(cfgs),
        "torch": torch.__version__,
        "gpu_capacity_bytes": GPUS,
        "gpu_allowance_bytes": GPU_ALLOWANCE,
        "gpu_margin": GPU_MARGIN,
        "stages": stages,
        "stages_gib": {n: gib_view(s) for n, s in stages.items()},
        "autoencoder_without_lpips": stages_as_cpu_run.get("autoencoder"),
    }
    transient = DEFAULT_TRANSIENT
    if args.measured:
        result["validation"] = validate(stages_as_cpu_run, json.loads(Path(args.measured).read_text()))
        if result["validation"]["calibrated_transient_fraction"] is not None:
            transient = result["validation"]["calibrated_transient_fraction"]
    result["transient_fraction_used"] = transient
    result["plan"] = plan(stages, transient)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"plan": result["plan"], "validation": result.get("validation")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
