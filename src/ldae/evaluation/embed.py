"""Embeddings: y_sem of every session, one file per model (+ the LDAE's latent and inverted x_T for the TEST
sessions, which interpolation and manipulation reuse).

File format (``embeddings/<model>.npz``, plain numpy, no pickles):
    participant_id, session_id (N,) str;  y (N, D) float32;  model (str);
    LDAE only: rows (M,) int - the test rows with a latent; z (M, C, d, h, w) scaled latent; x_T (M, ...) the
    y_sem-guided DDIM inversion of z at ``steps`` DDIM steps; scale_factor; steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ldae import verbs
from ldae.data.images import image_reader, records_of
from ldae.files import atomic_output
from ldae.models import io

__all__ = ["Embeddings", "iterate_batches", "compute_embeddings", "save_embeddings", "load_embeddings"]


@dataclass
class Embeddings:
    ids: pd.DataFrame  # participant_id, session_id
    y: np.ndarray
    model: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def key_rows(self) -> dict[tuple[str, str], int]:
        return {(p, s): i for i, (p, s) in enumerate(zip(self.ids.participant_id, self.ids.session_id))}

    def lookup(self, name: str) -> dict[tuple[str, str], torch.Tensor]:
        """(participant_id, session_id) -> tensor, for ``y`` or a per-test-row array (``z``, ``x_T``)."""
        if name == "y":
            rows, values = np.arange(len(self.y)), self.y
        else:
            rows, values = self.extra["rows"], self.extra[name]
        return {
            (self.ids.participant_id[r], self.ids.session_id[r]): torch.from_numpy(np.array(values[i]))
            for i, r in enumerate(rows)
        }

    def aligned(self, table: pd.DataFrame) -> np.ndarray:
        """``y`` rows in the order of ``table`` (participant_id, session_id); every session must be present."""
        index = self.key_rows()
        missing = [(p, s) for p, s in zip(table.participant_id, table.session_id) if (p, s) not in index]
        if missing:
            raise KeyError(f"{len(missing)} session(s) without an embedding in {self.model!r}, e.g. {missing[:3]}")
        return self.y[[index[(p, s)] for p, s in zip(table.participant_id, table.session_id)]]


def iterate_batches(
    records: Sequence[dict], load: Callable[[str], torch.Tensor], batch_size: int
) -> Iterator[tuple[list[dict], torch.Tensor]]:
    """``(records, (B, 1, X, Y, Z) images)`` batches; ``load(path)`` gives one ``(1, X, Y, Z)`` image."""
    batch_size = max(1, int(batch_size))
    for start in range(0, len(records), batch_size):
        chunk = list(records[start : start + batch_size])
        yield chunk, torch.stack([torch.as_tensor(load(r["image"])).float() for r in chunk])


@torch.no_grad()
def compute_embeddings(
    batches: Iterable[tuple[list[dict], torch.Tensor]],
    semantic: Callable,
    invert: Callable | None = None,
    want_inversion: Callable[[dict], bool] = lambda r: False,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """y_sem of every batch; for records where ``want_inversion(record)``, also ``invert(images, y) -> (z, x_T)``.

    Returns (ids, y, extra) with extra = {rows, z, x_T} (empty when nothing was inverted)."""
    ids, ys, rows, zs, xts = [], [], [], [], []
    for records, images in batches:
        y = semantic(images)
        wanted = [i for i, r in enumerate(records) if want_inversion(r)]
        if invert is not None and wanted:
            z, x_T = invert(images[wanted], y[wanted])
            rows.extend(len(ids) + i for i in wanted)
            zs.append(z.float().cpu().numpy())
            xts.append(x_T.float().cpu().numpy())
        ids.extend({"participant_id": r["participant_id"], "session_id": r["session_id"]} for r in records)
        ys.append(y.float().cpu().numpy())
    if not ids:
        raise ValueError("no session to embed")
    extra = {}
    if rows:
        extra = {"rows": np.asarray(rows, dtype=np.int64), "z": np.concatenate(zs), "x_T": np.concatenate(xts)}
    return pd.DataFrame(ids), np.concatenate(ys).astype(np.float32), extra


def save_embeddings(
    path: str | os.PathLike,
    ids: pd.DataFrame,
    y: np.ndarray,
    model: str,
    extra: dict[str, np.ndarray] | None = None,
    **meta,
) -> None:
    """Atomically write the npz (see module docstring)."""
    arrays = {
        "participant_id": ids.participant_id.to_numpy(dtype=str),
        "session_id": ids.session_id.to_numpy(dtype=str),
        "y": np.asarray(y, dtype=np.float32),
        "model": np.asarray(model),
    }
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    arrays.update({k: np.asarray(v) for k, v in meta.items()})
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    with np.load(path, allow_pickle=False) as data:
        ids = pd.DataFrame(
            {"participant_id": data["participant_id"].astype(str), "session_id": data["session_id"].astype(str)}
        )
        extra = {k: data[k] for k in data.files if k not in ("participant_id", "session_id", "y", "model")}
        return Embeddings(ids, data["y"], str(data["model"]), extra)


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    """``ldae embed``: y_sem of every QC-passed session for one model (+ LDAE x_T of the test sessions)."""
    from . import runtime

    parser = runtime.base_parser("embed", "y_sem of every session, one file per model", images=True)
    runtime.add_ldae_args(parser, required=False)
    parser.add_argument("--model", required=True, choices=["ldae", "dae", "supervised_ad", "supervised_age"])
    parser.add_argument("--model-dir", type=Path, default=None, help="model folder of a baseline (dae/supervised)")
    parser.add_argument("--out", required=True, type=Path)
    args, cfg = runtime.parse(parser, argv, "evaluation.embed")
    dev = runtime.device()
    table = records_of(args)
    records = table.to_dict("records")
    load = image_reader(verbs.parse_config_arg(args.images))
    invert, meta = None, {}
    if args.model == "ldae":
        pipe = runtime.ldae_pipeline(args, dev)
        steps = int(cfg["ddim_steps"])
        semantic = pipe.semantic

        def invert(images, y):
            z = pipe.latent(images)
            return z, pipe.invert(z, y, steps)

        meta = {"steps": steps, "scale_factor": pipe.scale_factor, "ddim": json.dumps(pipe.ddim.as_config())}
    elif args.model == "dae":
        semantic = io.load_dae(args.model_dir, dev).semantic
    else:
        semantic = io.EncoderPipeline(io.load_supervised(args.model_dir, dev).encoder).semantic

    wanted = set(cfg["invert_splits"])
    ids, y, extra = compute_embeddings(
        iterate_batches(records, load, cfg["batch_size"]), semantic, invert, lambda r: r["split"] in wanted
    )
    save_embeddings(args.out, ids, y, args.model, extra, **meta)
    log_msg = f"embed {args.model}: {len(ids)} sessions, y_sem dim {y.shape[1]}"
    if extra:
        log_msg += f", x_T for {len(extra['rows'])} {'/'.join(sorted(wanted))} sessions at {meta['steps']} steps"
    print(log_msg)
    return 0
