"""What every evaluation verb shares: arguments, device, session/image tables, image loading through the shared
MONAI transforms, and loading the trained models (stages via :mod:`ldae.models.io`, baselines via
:mod:`ldae.training.baselines`) into the model pipelines (ldae.models.pipelines)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger("ldae.evaluation")

__all__ = [
    "base_parser", "add_image_args", "add_ldae_args", "add_ddim_arg", "ddim_settings", "setup", "device",
    "parse_json", "image_table",
    "ImageLoader", "load_ldae_pipeline", "load_dae_pipeline", "load_supervised_encoder", "session_table",
]


def parse_json(text: str | None) -> dict[str, Any]:
    """A config (sub-)section passed by a rule as JSON/YAML text ('' -> {}); JSON first, so that 1e-05 stays a
    number (YAML 1.1 reads it as a string) - the training verbs' parser."""
    from ldae.training.stage import parse_config_arg

    return parse_config_arg(text)


def base_parser(verb: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"ldae {verb}", description=description)
    parser.add_argument("--config", default="", help="this rule's config section (JSON/YAML text)")
    parser.add_argument("--sessions", required=True, type=Path, help="session table (tables/sessions.tsv)")
    parser.add_argument("--splits", required=True, type=Path, help="split table (tables/splits.tsv)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return parser


def add_image_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qc", required=True, type=Path, help="preprocessing QC table")
    parser.add_argument("--derivatives", type=Path, default=None,
                        help="root the QC table's `preproc` paths are relative to (default: its folder)")
    parser.add_argument("--images", default="", help="the `images` config section (JSON/YAML)")


def add_ldae_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    for name, what in (("autoencoder", "train_autoencoder"), ("latents", "encode_latents"), ("ldm", "train_ldm"),
                       ("ldae", "train_ldae")):
        parser.add_argument(f"--{name}", required=required, type=Path, help=f"model folder of rule {what}")
    add_ddim_arg(parser)  # every verb that loads the LDAE chain runs DDIM with the `ddim` section


def add_ddim_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ddim", default="", help="the `ddim` config section (JSON/YAML; '': the defaults)")


def ddim_settings(text: str | None):
    """:class:`ldae.diffusion.DDIMSettings` from the ``--ddim`` text (x0 clamp and grid of every DDIM call)."""
    from ldae.diffusion import DDIMSettings

    return DDIMSettings.from_config(parse_json(text))


def setup(threads: int = 0) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    warnings.filterwarnings("ignore", message=".*backbone weights.*not found.*")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def session_table(sessions: Path, splits: Path) -> pd.DataFrame:
    from ldae.data.tables import sessions_with_splits

    return sessions_with_splits(sessions, splits)


def image_table(qc: Path, sessions: Path, splits: Path, derivatives: Path | None = None) -> pd.DataFrame:
    """QC-passed sessions with split, metadata and absolute image path (:func:`ldae.training.data.image_records`)."""
    from ldae.training.data import image_records

    root = derivatives if derivatives is not None else Path(qc).parent
    return image_records(qc, sessions, splits, root)


class ImageLoader:
    """``loader(path) -> (1, X, Y, Z)`` float tensor through the shared MONAI inference transforms; the affine of the
    transformed image (template space, after resampling and pad/crop) is kept in ``affines[path]``."""

    def __init__(self, images_cfg: Mapping[str, Any] | None = None, transform=None):
        if transform is None:
            from ldae.training.stage import build_image_transform

            transform = build_image_transform(dict(images_cfg or {}))
        self.transform = transform
        self.affines: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> torch.Tensor:
        image = self.transform({"image": str(path)})["image"]
        affine = getattr(image, "affine", None)
        if affine is not None:
            self.affines[str(path)] = np.asarray(affine, dtype=np.float64)
        if hasattr(image, "as_tensor"):
            image = image.as_tensor()
        image = torch.as_tensor(image, dtype=torch.float32)
        return image[None] if image.ndim == 3 else image


# ------------------------------------------------------------------------------------------------ models
from ldae.models.io import load_ldae_pipeline  # noqa: E402  (the one LDAE loader; re-exported for the verbs)


def load_dae_pipeline(folder: Path, device_: torch.device | str = "cpu", ddim=None):
    from ldae.training.baselines import load_dae

    return load_dae(Path(folder) / "weights.pt", Path(folder) / "config.yaml", device_, ddim)


def load_supervised_encoder(folder: Path, device_: torch.device | str = "cpu"):
    from ldae.training.baselines import load_supervised

    return load_supervised(Path(folder) / "weights.pt", Path(folder) / "config.yaml", device_).encoder


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(data), indent=2, default=str))
