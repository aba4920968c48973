"""Table 6: reconstruction quality on the TEST split at T = 10 / 20 / 50 / 100 DDIM steps.

Rows (paper Table 6):
  * AutoencoderKL - encode/decode through the stage-1 autoencoder (no diffusion; the same at every T);
  * LDDIM, encoded x_T - DDIM-inverted latent, decoded by the unconditional LDM;
  * LDAE (a) y_sem + noise - x_T drawn from N(0, I) (seeded), decoded with y_sem guidance;
  * LDAE (b) y_sem + encoded x_T - x_T from the y_sem-guided DDIM inversion;
  * DAE (a) / (b) - the same two encodings for the voxel-space DAE baseline (metrics at the DAE's resolution).
SSIM / LPIPS / MSE against the preprocessed input image (LPIPS "n/a" without local weights). "Code size" is the
number of floats the representation holds (y_sem, x_T or both); the paper counts spatial positions instead
(e.g. 5,120 = 16x20x16 for the 3-channel latent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ldae import files, verbs
from ldae.data.images import image_reader, records_of
from ldae.models import io
from ldae.models.pipelines import DAEPipeline, LDAEPipeline, seeded_noise

from .bootstrap import BootstrapSettings, bootstrap_settings, mean_interval
from .metrics import ImageMetrics

__all__ = ["ROWS", "reconstruction_study", "summarise_reconstruction"]

# (model, encoding) in the paper's order
ROWS = [
    ("AutoencoderKL", "-"),
    ("LDDIM", "encoded x_T"),
    ("LDAE", "(a) y_sem + noise x_T"),
    ("LDAE", "(b) y_sem + encoded x_T"),
    ("DAE", "(a) y_sem + noise x_T"),
    ("DAE", "(b) y_sem + encoded x_T"),
]


def reconstruction_study(
    batches: Iterable[tuple[list[dict], torch.Tensor]],
    steps_list: Sequence[int],
    metrics: ImageMetrics,
    ldae: LDAEPipeline | None = None,
    dae: DAEPipeline | None = None,
    seed: int = 0,
    keep_examples: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-session metrics for every row of :data:`ROWS` the given models support.

    ``batches`` yields ``(records, images)``: session records (dicts with participant_id, session_id) and the
    ``(B, 1, X, Y, Z)`` images in [0, 1]. Noise for the (a) rows is seeded per session (``seed`` + running index),
    identical across T. Returns (one row per session x model x encoding x T, example volumes of the first
    ``keep_examples`` sessions keyed '<model> <encoding> T=<T>' and 'input')."""
    rows, examples = [], {}
    index = 0
    for records, images in batches:
        b = images.shape[0]
        keep = max(0, min(b, keep_examples - index))
        ids = [{"participant_id": r["participant_id"], "session_id": r["session_id"]} for r in records]

        def add(
            model: str,
            encoding: str,
            steps,
            pred: torch.Tensor,
            target: torch.Tensor,
            size: int,
            _ids=ids,
            _keep=keep,
            _index=index,
        ) -> None:
            for rid, values in zip(_ids, metrics(pred, target, offset=_index)):
                rows.append({**rid, "model": model, "encoding": encoding, "T": steps, "code_size": size, **values})
            if _keep:
                key = f"{model} {encoding} T={steps}"
                examples.setdefault(key, [])
                examples[key].extend(pred[:_keep, 0].float().cpu().numpy())

        if keep:
            examples.setdefault("input", []).extend(images[:keep, 0].float().cpu().numpy())
        if ldae is not None:
            x = images.to(ldae.device)
            y = ldae.semantic(x)
            z = ldae.latent(x)
            zsize, ysize = int(np.prod(z.shape[1:])), int(y.shape[1])
            add("AutoencoderKL", "-", "-", ldae.decode(z), x, zsize)
            noise = torch.cat([seeded_noise((1, *z.shape[1:]), seed + index + i) for i in range(b)]).to(z)
            for steps in steps_list:
                xt_u = ldae.invert(z, None, steps)
                add("LDDIM", "encoded x_T", steps, ldae.decode(ldae.sample(xt_u, None, steps)), x, zsize)
                add("LDAE", "(a) y_sem + noise x_T", steps, ldae.decode(ldae.sample(noise, y, steps)), x, ysize)
                xt = ldae.invert(z, y, steps)
                add("LDAE", "(b) y_sem + encoded x_T", steps, ldae.decode(ldae.sample(xt, y, steps)), x, ysize + zsize)
        if dae is not None:
            xd = dae.resize(images)
            y = dae.dae.encode(xd)
            vsize, ysize = int(np.prod(xd.shape[1:])), int(y.shape[1])
            noise = torch.cat([seeded_noise((1, *xd.shape[1:]), seed + 7919 + index + i) for i in range(b)]).to(xd)
            for steps in steps_list:
                add("DAE", "(a) y_sem + noise x_T", steps, dae.sample(noise, y, steps), xd, ysize)
                add(
                    "DAE",
                    "(b) y_sem + encoded x_T",
                    steps,
                    dae.sample(dae.invert(xd, y, steps), y, steps),
                    xd,
                    ysize + vsize,
                )
        index += b
    return pd.DataFrame(rows), {k: np.stack(v) for k, v in examples.items()}


def summarise_reconstruction(per_session: pd.DataFrame, bootstrap: BootstrapSettings | None = None) -> pd.DataFrame:
    """Table 6: mean and standard deviation per (model, encoding, T), in the paper's row order; with ``bootstrap``
    the subject-level interval of each mean (``<metric>_ci_low/_ci_high``)."""
    if per_session.empty:
        raise ValueError("no reconstruction was computed (no test session?)")
    frame = per_session.copy()
    frame["T"] = frame["T"].astype(str)
    grouped = frame.groupby(["model", "encoding", "T"], sort=False)
    out = grouped.agg(
        code_size=("code_size", "first"),
        n=("ssim", "size"),
        SSIM=("ssim", "mean"),
        SSIM_sd=("ssim", "std"),
        LPIPS=("lpips", "mean"),
        LPIPS_sd=("lpips", "std"),
        MSE=("mse", "mean"),
        MSE_sd=("mse", "std"),
    ).reset_index()
    if bootstrap is not None:
        for metric, column in (("SSIM", "ssim"), ("LPIPS", "lpips"), ("MSE", "mse")):
            by_key = {
                key: mean_interval(group[column].to_numpy(float), group.participant_id.to_numpy(), bootstrap)
                for key, group in grouped
            }
            bounds = [by_key[key] for key in zip(out.model, out.encoding, out["T"])]
            out[f"{metric}_ci_low"] = [b[0] for b in bounds]
            out[f"{metric}_ci_high"] = [b[1] for b in bounds]
    order = {row: i for i, row in enumerate(ROWS)}
    out["_row"] = [order.get((m, e), len(order)) for m, e in zip(out.model, out.encoding)]
    out["_t"] = [-1 if t == "-" else int(t) for t in out["T"]]
    out = out.sort_values(["_row", "_t"]).drop(columns=["_row", "_t"]).reset_index(drop=True)
    return out.rename(columns={"model": "Model", "encoding": "Encoding", "code_size": "Code size"})


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    """``ldae reconstruct``: Table 6 on the test split (+ per-session values and an example figure)."""
    from pathlib import Path

    from . import runtime
    from .embed import iterate_batches
    from .figures import reconstruction_examples
    from .metrics import LPIPS
    from .paper import TABLE6
    from .tables import write_table

    parser = runtime.base_parser(
        "reconstruct", "Table 6: SSIM / LPIPS / MSE at T = 10/20/50/100 (test split)", images=True
    )
    runtime.add_ldae_args(parser)
    parser.add_argument("--dae", type=Path, default=None, help="model folder of rule train_dae (DAE rows)")
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--per-session", required=True, type=Path)
    parser.add_argument("--figure", required=True, type=Path)
    args, cfg = runtime.parse(parser, argv, "evaluation.reconstruction", shared=("seed", "lpips_weights", "bootstrap"))
    dev = runtime.device()
    table = records_of(args)
    test = table[table.split == "test"].sort_values(["participant_id", "months"])
    if cfg["max_sessions"]:
        test = test.sample(n=min(int(cfg["max_sessions"]), len(test)), random_state=int(cfg["seed"]))
        test = test.sort_values(["participant_id", "months"])
    if test.empty:
        from .figures import placeholder_figure

        message = "no test session passed preprocessing QC: nothing to reconstruct"
        write_table(pd.DataFrame([{"Model": "n/a", "n": 0}]), args.table, notes=[message], paper=pd.DataFrame(TABLE6))
        files.write_tsv(
            pd.DataFrame(columns=["participant_id", "session_id", "model", "encoding", "T"]), args.per_session
        )
        placeholder_figure(args.figure, message)
        print(message)
        return 0
    ldae = runtime.ldae_pipeline(args, dev)
    dae = io.load_dae(args.dae, dev, runtime.ddim_settings(args.ddim)) if args.dae else None
    lpips = LPIPS(cfg["lpips_weights"] or None, seed=int(cfg["seed"]), device=dev)
    load = image_reader(verbs.parse_config_arg(args.images))
    steps = [int(s) for s in cfg["steps"]]
    per, examples = reconstruction_study(
        iterate_batches(test.to_dict("records"), load, cfg["batch_size"]),
        steps,
        ImageMetrics(lpips),
        ldae=ldae,
        dae=dae,
        seed=int(cfg["seed"]),
        keep_examples=int(cfg["examples"]),
    )
    boot = bootstrap_settings(cfg["bootstrap"], int(cfg["seed"]))
    summary = summarise_reconstruction(per, boot)
    notes = [
        f"{len(test)} test sessions ({test.participant_id.nunique()} subjects); mean over sessions (sd in the TSV); "
        f"[low, high]: {boot.describe()}.",
        "SSIM: 3-D, Gaussian kernel 3, sigma 1.5, data range 1 (MONAI); MSE (MONAI); LPIPS: SqueezeNet, 50% of the "
        "slices per axis (seeded), summed over the axes (MONAI PerceptualLoss)"
        + ("" if lpips.available else " - n/a: no local LPIPS weights (evaluation.lpips_weights)")
        + ".",
        "Reference: the preprocessed input scan (DAE rows: resized to the DAE's resolution). Code size = floats in "
        "the representation (the paper counts latent positions: 5,120 = 16x20x16).",
        "(a) x_T drawn from N(0, I), seeded per session; (b) x_T from deterministic DDIM inversion (eta 0) with the "
        "same T; LDDIM: the frozen unconditional LDM.",
    ]
    cols = ["Model", "Encoding", "Code size", "T", "SSIM", "LPIPS", "MSE"]
    write_table(
        summary,
        args.table,
        notes=notes,
        md_columns=cols,
        paper=pd.DataFrame(TABLE6),
        intervals=["SSIM", "LPIPS", "MSE"],
    )
    files.write_tsv(per, args.per_session)
    if examples:
        reconstruction_examples(examples, args.figure)
    print(summary[cols].to_string(index=False))
    return 0
