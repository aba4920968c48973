"""What the evaluation verbs share beyond :mod:`ldae.verbs`: their parser, the device, the LDAE chain's model
folders (``--autoencoder/--latents/--ldm/--ldae``) and the ``--ddim`` section. Images come from
:mod:`ldae.data.images`, models from :mod:`ldae.models.io` (one pipeline per model)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ldae import verbs

log = logging.getLogger("ldae.evaluation")

__all__ = ["base_parser", "parse", "add_ldae_args", "add_ddim_arg", "ddim_settings", "device"]


def base_parser(verb: str, description: str, images: bool = False) -> argparse.ArgumentParser:
    """``--config``, ``--threads``, ``--sessions``, ``--splits`` (+ ``--qc/--derivatives/--images`` with ``images``)."""
    parser = verbs.parser(verb, description)
    verbs.add_table_args(parser, images)
    return parser


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, section: str, shared: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, dict]:
    """The verb's arguments (logging and threads set up: :func:`ldae.verbs.setup`) and its config ``section``
    resolved from ``--config`` (``shared``: see :func:`ldae.verbs.section`)."""
    args = parser.parse_args(argv)
    verbs.setup(args.threads)
    return args, verbs.section(section, args.config, shared=shared)


def add_ldae_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    for name, what in (
        ("autoencoder", "train_autoencoder"),
        ("latents", "encode_latents"),
        ("ldm", "train_ldm"),
        ("ldae", "train_ldae"),
    ):
        parser.add_argument(f"--{name}", required=required, type=Path, help=f"model folder of rule {what}")
    add_ddim_arg(parser)  # every verb that loads the LDAE chain runs DDIM with the `ddim` section


def add_ddim_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ddim", default="", help="the `ddim` config section (JSON/YAML; '': the defaults)")


def ddim_settings(text: str | None):
    """:class:`ldae.diffusion.DDIMSettings` from the ``--ddim`` text (x0 clamp and grid of every DDIM call)."""
    from ldae.diffusion import DDIMSettings

    return DDIMSettings.from_config(verbs.section("ddim", text))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ldae_pipeline(args, device_: torch.device | str):
    """The LDAE chain of the verb's ``--autoencoder/--latents/--ldm/--ldae`` folders, with its ``--ddim``."""
    from ldae.models.io import load_ldae_pipeline

    return load_ldae_pipeline(args.autoencoder, args.latents, args.ldm, args.ldae, device_, ddim_settings(args.ddim))
