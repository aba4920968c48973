"""Table 5: efficiency of LDAE vs the voxel-space DAE, measured in ONE run on the same hardware.

Seconds per reconstruction at T DDIM steps (paper: T = 100; LDAE 6 s, DAE 120 s on an A100, "20x"): the full
encode-decode path (y_sem, [AE encoder], DDIM inversion, DDIM decoding, [AE decoder]) for one scan, after a
warm-up, median over repeats; CUDA is synchronised around each run. On a GPU the runs use the precision training
uses (``evaluation.timing.precision``, default auto: what the training verbs resolve ``precision: auto`` to -
bf16 autocast on bf16-capable GPUs; the authors trained in 16-mixed), on a CPU fp32; the table states which.
Parameters as the paper counts them (~920M for the LDAE): semantic encoder + gradient estimator with the frozen
LDM inside; the autoencoder is reported apart, not counted. Training wall time from the training rules' Snakemake
benchmark files (s column), when given.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from ldae import verbs
from ldae.data.images import image_reader, records_of
from ldae.models import io

__all__ = ["time_call", "training_seconds", "efficiency_table", "timing_precision", "precision_context"]

AUTOCAST = {
    "bf16-mixed": torch.bfloat16,
    "bf16": torch.bfloat16,
    "16-mixed": torch.float16,
    "16": torch.float16,
    "32-true": None,
    "32": None,
}


def timing_precision(requested: str, device: torch.device | str) -> tuple[str, torch.dtype | None]:
    """(label for the table, autocast dtype or None) of the timed runs: on CUDA the training precision
    (``auto`` resolved as the training verbs do), on any other device fp32."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"fp32 ({device.type.upper()})", None
    from ldae.verbs import resolve_precision

    resolved = resolve_precision(str(requested))
    if resolved not in AUTOCAST:
        raise ValueError(
            f"evaluation.timing.precision: {requested!r} is not one of auto, bf16-mixed, 16-mixed, 32-true"
        )
    dtype = AUTOCAST[resolved]
    label = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast", None: "fp32"}[dtype]
    return f"{label} (CUDA, training precision {resolved})", dtype


def precision_context(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Median / min / max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    device = torch.device(device)
    for _ in range(max(0, warmup)):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "seconds_min": min(times),
        "seconds_max": max(times),
        "repeats": len(times),
    }


def training_seconds(benchmarks: Sequence[str | Path]) -> float:
    """Sum of the wall-clock seconds (column ``s``) of Snakemake benchmark files (NaN if none readable)."""
    total, found = 0.0, False
    for path in benchmarks:
        path = Path(path)
        if not path.is_file():
            continue
        frame = pd.read_csv(path, sep="\t")
        if "s" in frame.columns and len(frame):
            total += float(frame["s"].iloc[-1])
            found = True
    return total if found else float("nan")


def efficiency_table(rows: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """Table 5 from per-model measurements; adds the DAE/LDAE time ratio row-wise as 'speed-up vs DAE'."""
    frame = pd.DataFrame([{"Model": name, **values} for name, values in rows.items()])
    if "DAE" in rows and "seconds" in frame.columns:
        dae_seconds = float(rows["DAE"].get("seconds", float("nan")))
        frame["speed-up vs DAE"] = dae_seconds / frame["seconds"].astype(float)
    return frame


# ------------------------------------------------------------------------------------------------------ CLI
def _table6_row(table6: pd.DataFrame | None, model: str, steps: int) -> dict[str, float]:
    if table6 is None:
        return {}
    rows = table6[
        (table6.Model == model)
        & (table6.Encoding.astype(str).str.startswith("(b)"))
        & (table6["T"].astype(str) == str(steps))
    ]
    if rows.empty:
        return {"SSIM": float("nan"), "LPIPS": float("nan")}
    return {"SSIM": float(rows.SSIM.iloc[0]), "LPIPS": float(rows.LPIPS.iloc[0])}


def main(argv: list[str] | None = None) -> int:
    """``ldae time-inference``: Table 5 - seconds per reconstruction and parameter counts, LDAE vs DAE."""
    from pathlib import Path

    from . import runtime
    from .paper import TABLE5
    from .tables import read_table, write_table

    parser = runtime.base_parser(
        "time-inference", "Table 5: seconds per reconstruction (same hardware, same run)", images=True
    )
    runtime.add_ldae_args(parser)
    parser.add_argument("--dae", type=Path, default=None, help="model folder of rule train_dae")
    parser.add_argument("--reconstruction", type=Path, default=None, help="Table 6 TSV (SSIM/LPIPS columns)")
    parser.add_argument("--benchmarks-ldae", nargs="*", default=[], help="benchmark TSVs of the LDAE's training")
    parser.add_argument("--benchmarks-dae", nargs="*", default=[], help="benchmark TSVs of the DAE's training")
    parser.add_argument("--table", required=True, type=Path)
    args, cfg = runtime.parse(parser, argv, "evaluation.timing")
    dev = runtime.device()
    images = records_of(args)
    test = images[images.split == "test"]
    record = (test if len(test) else images).sort_values(["participant_id", "months"]).iloc[0]
    x = image_reader(verbs.parse_config_arg(args.images))(record["image"])[None].to(dev)
    steps = int(cfg["steps"])
    table6 = read_table(args.reconstruction) if args.reconstruction and Path(args.reconstruction).is_file() else None
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    precision, dtype = timing_precision(cfg["precision"], dev)

    def timed_run(pipe):
        def run():
            with precision_context(dev, dtype):
                return pipe.reconstruct(x, steps)

        return time_call(run, dev, int(cfg["repeats"]), int(cfg["warmup"]))

    rows = {}
    ldae = runtime.ldae_pipeline(args, dev)
    timed = timed_run(ldae)
    n = ldae.parameter_count()
    hours = training_seconds(args.benchmarks_ldae) / 3600
    rows["LDAE"] = {
        "Parameters": n,
        "Parameters (M)": round(n / 1e6, 1),
        "AE parameters (not counted)": ldae.autoencoder_parameter_count(),
        "Training (h)": hours,
        **timed,
        **_table6_row(table6, "LDAE", steps),
    }
    del ldae
    if args.dae:
        dae = io.load_dae(args.dae, dev, runtime.ddim_settings(args.ddim))
        timed = timed_run(dae)
        n = dae.parameter_count()
        rows["DAE"] = {
            "Parameters": n,
            "Parameters (M)": round(n / 1e6, 1),
            "Training (h)": training_seconds(args.benchmarks_dae) / 3600,
            **timed,
            **_table6_row(table6, "DAE", steps),
        }
    table = efficiency_table(rows)
    table.insert(1, "Hardware", hardware)
    table.insert(2, "Precision", precision)
    table.insert(3, "T", steps)
    table = table.rename(columns={"seconds": "Seconds per reconstruction"})
    notes = [
        f"One scan ({record['participant_id']} {record['session_id']}), full encode + decode (y_sem, "
        f"[AE encoder], DDIM inversion, DDIM decoding, [AE decoder]) at T = {steps}; median of {cfg['repeats']} "
        f"runs after {cfg['warmup']} warm-up run(s); both models on the same device in the same job, in {precision} "
        "(GPU: the training precision; CPU: fp32).",
        "Parameters: LDAE = semantic encoder + gradient estimator with the frozen LDM inside (as the paper's ~920M); "
        "the AutoencoderKL is listed apart and not counted. DAE: the whole voxel-space model.",
        "Training (h): wall time of the training rules' Snakemake benchmarks (LDAE: autoencoder + latents + LDM + "
        "LDAE; DAE: train_dae). SSIM / LPIPS: Table 6, encoded x_T rows at this T.",
        "Paper: LDAE 6 s vs DAE 120 s on an A100 (20x).",
    ]
    cols = [
        "Model",
        "Hardware",
        "Precision",
        "T",
        "Parameters",
        "AE parameters (not counted)",
        "Training (h)",
        "Seconds per reconstruction",
        "speed-up vs DAE",
        "SSIM",
        "LPIPS",
    ]
    write_table(
        table, args.table, notes=notes, md_columns=[c for c in cols if c in table.columns], paper=pd.DataFrame(TABLE5)
    )
    print(table.to_string(index=False))
    return 0
