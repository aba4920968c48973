"""The verb kit: what every ``ldae <verb>`` shares, below the stage packages.

* config sections: :func:`section` resolves the section a rule passes over the defaults READ FROM THE SCHEMA
  (``workflow/schemas/config.schema.yaml``, the one source of defaults); an unknown key is an error naming it;
* :func:`parse_config_arg`: the ``--config`` text (JSON/YAML, or a YAML file);
* the shared command-line arguments (:func:`add_config_arg`, :func:`add_table_args`, :func:`add_threads_arg`);
* :func:`setup`: logging, CPU threads and the warnings every verb silences.

The one atomic writer every verb uses lives in :mod:`ldae.files` (no torch there: the data verbs run without it).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


# ------------------------------------------------------------------------------------------ config sections
@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        raise FileNotFoundError(
            f"config schema not found: {SCHEMA} (the defaults of every config section live "
            "there; run ldae from the repository checkout)"
        )
    return yaml.safe_load(SCHEMA.read_text())


def _node_defaults(node: Mapping[str, Any], where: str) -> Any:
    if node.get("properties"):
        return {key: _node_defaults(child, f"{where}.{key}") for key, child in node["properties"].items()}
    if "default" not in node:
        raise KeyError(f"the schema gives no default for {where}")
    return copy.deepcopy(node["default"])


def schema_defaults(name: str) -> Any:
    """The defaults of config section ``name`` (dotted, e.g. ``evaluation.probe``) as the schema gives them."""
    node = _schema()
    for key in name.split("."):
        try:
            node = node["properties"][key]
        except KeyError:
            raise KeyError(f"no config section {name!r} in {SCHEMA}") from None
    return _node_defaults(node, name)


def resolve_config(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """``given`` merged over ``defaults`` (recursively for non-empty dict defaults); unknown keys are errors."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (given or {}).items():
        if key not in defaults:
            raise ValueError(f"unknown key {where}.{key} in the config; known: {sorted(defaults)}")
        if isinstance(defaults[key], dict) and defaults[key] and value is not None:
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {where}.{key} must be a mapping, got {value!r}")
            out[key] = resolve_config(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def section(name: str, given: Mapping[str, Any] | str | None = None, shared: tuple[str, ...] = ()) -> dict[str, Any]:
    """Config section ``name`` resolved over the schema's defaults; ``given``: a mapping or ``--config`` text.

    ``shared``: keys of the parent section the rule passes along with this one (e.g. ``evaluation.seed`` and
    ``evaluation.bootstrap`` for ``evaluation.probe``)."""
    defaults = schema_defaults(name)
    parent = name.rpartition(".")[0]
    for key in shared:
        defaults[key] = schema_defaults(f"{parent}.{key}")
    if isinstance(given, str) or given is None:
        given = parse_config_arg(given)
    return resolve_config(defaults, given, name)


def parse_config_arg(text: str | None) -> dict[str, Any]:
    """``--config``: JSON/YAML text (what the rules pass) or the path of a YAML file; '' -> {}."""
    if text is None or text == "":
        return {}
    path = Path(text)
    if len(text) < 4096 and "\n" not in text and not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text()
    try:  # JSON first: YAML 1.1 reads JSON's 1e-07 as a string
        value = json.loads(text)
    except ValueError:
        value = yaml.safe_load(text)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"--config must be a mapping, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------- command line
def parser(verb: str, description: str) -> argparse.ArgumentParser:
    """A verb's parser with ``--config`` and ``--threads``."""
    made = argparse.ArgumentParser(prog=f"ldae {verb}", description=description)
    made.add_argument("--config", default="", help="this rule's config section: JSON/YAML text or a YAML file")
    made.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return made


def add_table_args(parser_: argparse.ArgumentParser, images: bool = True) -> None:
    """``--sessions``/``--splits`` and, with ``images``, ``--qc``/``--derivatives``/``--images``."""
    parser_.add_argument("--sessions", required=True, type=Path, help="session table (tables/sessions.tsv)")
    parser_.add_argument("--splits", required=True, type=Path, help="split table (tables/splits.tsv)")
    if images:
        parser_.add_argument("--qc", required=True, type=Path, help="preprocessing QC table (qc.tsv)")
        parser_.add_argument(
            "--derivatives",
            type=Path,
            default=None,
            help="root the QC table's `preproc` paths are relative to (default: its folder)",
        )
        parser_.add_argument("--images", default="", help="the `images` config section (JSON/YAML)")


def setup(threads: int = 0) -> None:
    """Logging to stderr, ``threads`` CPU threads (0: torch's default), and the known harmless warnings off."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if threads and threads > 0:
        import torch

        torch.set_num_threads(int(threads))
    for message in (
        ".*does not have many workers.*",
        ".*Experiment logs directory.*",
        ".*Using ModelCheckpoint with manual optimization.*",
        ".*The `srun` command is available.*",
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
        ".*backbone weights.*not found.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def resolve_precision(precision: str) -> str:
    """A `train.precision` / `evaluation.timing.precision` value for Lightning: ``auto`` -> bf16-mixed on GPUs
    that support it, else 32-true."""
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"
