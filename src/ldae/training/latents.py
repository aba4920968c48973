"""`ldae encode-latents`: every QC-passed session through the trained AutoencoderKL encoder, once.

Stores one seeded posterior SAMPLE per session (``sample: true``, the authors' code; ``false``: the posterior mean
``z_mu``) of every session of every split in a :class:`ldae.data.latents.LatentStore` (``latents.npy``
N x C x d x h x w float32, ``index.tsv`` row -> session/split/metadata/image, ``scale.json``). The scale factor is
``scale_factor`` when set (0.873, the authors' hard-coded value for THEIR autoencoder) or, with ``null``, ``1 / std``
over the TRAINING latents only (Rombach et al. App. G). ``scale.json`` records which (``scale_source``), the
latents' source and the training std either way. Stages 2 and 3 train on ``scale * z``, so the LDM never
re-encodes images.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldae import verbs
from ldae.data.images import ImageDataset, records_of
from ldae.data.latents import LatentStore
from ldae.models import io
from ldae.training import stage

log = logging.getLogger("ldae.training")

STAGE = "latents"
INDEX_COLUMNS = ("participant_id", "session_id", "months", "age", "diagnosis", "split", "probe_split", "image")


def scale_factor(cfg: dict[str, Any], train: np.ndarray) -> tuple[float, str]:
    """(scale factor, how it was chosen): the configured value, or 1/std over the training latents for null."""
    from ldae.models import latent_scale_factor

    fixed = cfg["scale_factor"]
    if fixed is None:
        return latent_scale_factor(torch.from_numpy(train)), "1/std of the training latents (latents.scale_factor null)"
    if isinstance(fixed, bool) or not isinstance(fixed, (int, float)) or not fixed > 0:
        raise ValueError(f"latents.scale_factor must be a positive number or null, got {fixed!r}")
    scaled_std = float(fixed) * float(train.std(dtype=np.float64))
    if not 0.5 < scaled_std < 2.0:
        log.warning(
            "latents.scale_factor %s gives the training latents std %.3f (not ~1): 0.873 belongs to the "
            "authors' autoencoder; set latents.scale_factor: null for 1/std of these latents",
            fixed,
            scaled_std,
        )
    return float(fixed), "config latents.scale_factor (authors' code: 0.873 hard-coded)"


def main(argv: list[str] | None = None) -> int:
    parser = stage.stage_parser("encode-latents", "encode every session once with the stage-1 autoencoder")
    parser.add_argument("--autoencoder", required=True, type=Path, help="stage-1 model folder (rule train_autoencoder)")
    args = parser.parse_args(argv)
    verbs.setup(args.threads)

    cfg = verbs.section(STAGE, args.config)
    images = verbs.parse_config_arg(args.images)
    device = torch.device("cuda" if torch.cuda.is_available() and args.devices not in ("0", 0) else "cpu")
    ae = io.load_autoencoder(args.autoencoder, device)
    table = records_of(args)
    dataset = ImageDataset(table.image.tolist(), images, cache="none")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=int(cfg["batch_size"]), shuffle=False, num_workers=int(cfg["num_workers"])
    )
    started = time.time()
    chunks = []
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device)
            z_mu, z_sigma = ae.encode(x)
            if cfg["sample"]:
                noise = torch.stack(
                    [
                        torch.randn(z_sigma.shape[1:], generator=stage.fixed_generator(int(cfg["seed"]), int(i)))
                        for i in batch["index"]
                    ]
                ).to(device)
                z = z_mu + z_sigma * noise
            else:
                z = z_mu
            chunks.append(z.float().cpu().numpy())
            log.info("encoded %d/%d sessions", sum(len(c) for c in chunks), len(dataset))
    latents = np.concatenate(chunks).astype(np.float32)
    train = latents[(table.split == "train").to_numpy()]
    if len(train) == 0:
        raise SystemExit("encode-latents: no training session: the scale factor needs training latents")
    scale, scale_source = scale_factor(cfg, train)
    index = table[[c for c in INDEX_COLUMNS if c in table.columns]].reset_index(drop=True)
    train_std = float(train.std(dtype=np.float64))
    meta = {
        "source": "posterior sample" if cfg["sample"] else "posterior mean",
        "scale_source": scale_source,
        "scaled_train_std": scale * train_std,
        "scale_over": "train split",
        "n_train": int(len(train)),
        "n_total": int(len(latents)),
        "train_std": train_std,
        "train_mean": float(train.mean(dtype=np.float64)),
        "latent_shape": list(latents.shape[1:]),
        "config": cfg,
        "images": images,
        "autoencoder_weights": str(io.weights_file(args.autoencoder)),
        "seconds": round(time.time() - started, 1),
        "paper_hardcoded_scale": 0.8730,
    }
    LatentStore(Path(args.out_dir)).write(latents, index, scale, meta)
    log.info(
        "latents %s of %d sessions (%s), scale factor %.4f (%s; scaled training std %.3f)",
        tuple(latents.shape[1:]),
        len(latents),
        meta["source"],
        scale,
        scale_source,
        scale * train_std,
    )
    return 0
