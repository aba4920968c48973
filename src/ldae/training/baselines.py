"""What the two baselines of Tables 5-7 share (`ldae train-dae`: :mod:`ldae.training.dae`, `ldae train-supervised`:
:mod:`ldae.training.supervised`): the LDAE's semantic encoder section with the baseline's overrides, the command
line, the image datasets.

Outputs of both (``--out-dir``, a model folder: :mod:`ldae.models.io`): weights.pt (``dae.*`` / ``model.*``),
config.yaml (resolved config incl. the encoder), metrics.csv, summary.json (parameter counts, target statistics),
best.ckpt/last.ckpt links.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ldae import verbs
from ldae.data.images import ImageDataset
from ldae.training import stage


def resolve_encoder(
    ldae_encoder: Mapping[str, Any] | str | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The LDAE's encoder section (``ldae.encoder``) with the baseline's overrides, over the encoder defaults;
    ``y_dim`` resolved to an integer."""
    from ldae.models.semantic_encoder import resolve_encoder_config

    merged = verbs.section("ldae.encoder", ldae_encoder)
    merged = verbs.resolve_config(merged, overrides or {}, "encoder")
    return resolve_encoder_config(merged, "ldae.encoder (with this baseline's encoder overrides)")


def baseline_parser(verb: str, description: str):
    parser = stage.stage_parser(verb, description)
    parser.add_argument("--encoder", default="", help="the LDAE's encoder section (ldae.encoder), JSON/YAML")
    return parser


def image_datasets(train, val, images, cfg, run_dir: Path):
    """(training, validation or None) image datasets of two tables with an ``image`` column, cached in the run."""

    def dataset(rows):
        return ImageDataset(rows.image.tolist(), images, cfg["cache"], run_dir / "cache")

    return dataset(train), (dataset(val) if len(val) else None)
