"""`ldae import-official`: the authors' released weights -> model folders in exactly the training rules' formats.

The authors (Lozupone et al. 2025) release ``autoencoderkl.pth`` (stage 1), ``encoder.pth`` (the stage-3 semantic
encoder) and ``decoder.pth`` (the stage-3 gradient estimator, whose frozen part IS the stage-2 EMA latent DDPM), plus
a Linear(768->1) AD-vs-CN probe with its z-score mean/std. This verb converts them strictly
(:mod:`ldae.models.official`, :mod:`ldae.models.official_encoder`: every tensor used, none missing, shapes checked)
and writes::

    OUT/autoencoder/{weights.pt, config.yaml, summary.json}     as rule train_autoencoder
    OUT/ldm/{weights.pt, config.yaml, summary.json}             as rule train_ldm (the frozen part of decoder.pth)
    OUT/ldae/{weights.pt, config.yaml, summary.json}            as rule train_ldae
    OUT/latents/scale.json                                      latents.scale_factor (authors: 0.873); not with
                                                                --no-scale (the workflow's encode_latents writes it)
    OUT/official_probe/probe.pt                                 with --probe (ldae.evaluation.probe_file format)

Network sizes come from the config's ``autoencoder``, ``ldm`` and ``ldae`` sections (their defaults are the paper's),
so a small configuration with small weights in the same layout imports the same way. Files are read with
``torch.load(..., weights_only=True)``; nothing is ever downloaded. Every folder is written to a temporary sibling
and renamed into place, so a failed import leaves no partial model folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["import_official", "main", "OFFICIAL_SCALE_FACTOR"]

OFFICIAL_SCALE_FACTOR = 0.8730  # hard-coded in the authors' code (their latents: posterior samples)


def _read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (:func:`ldae.models.io.read_tensor_file`, ``weights_only``); Lightning-style
    ``{"state_dict": ...}`` unwrapped. Errors name the file and what it should be."""
    from ldae.models.io import read_tensor_file

    try:
        data = read_tensor_file(path, what)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"import-official: {e}") from e
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise SystemExit(f"import-official: {path} is not a state dict of tensors ({what})")
    return dict(data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _workflow_config(text: str) -> dict[str, Any]:
    """``--config``: a YAML/JSON file (e.g. config.yaml) or an inline JSON object with the sections."""
    path = Path(text)
    if path.is_file():
        return yaml.safe_load(path.read_text()) or {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"import-official: --config is neither a file nor a JSON object: {text[:80]!r}") from e


def resolved_sections(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The autoencoder / ldm / ldae sections over the training verbs' defaults, exactly as training resolves them."""
    from ldae import verbs
    from ldae.diffusion import DDIMSettings
    from ldae.models.semantic_encoder import resolve_encoder_config

    sections = {
        "autoencoder": verbs.section("autoencoder", cfg.get("autoencoder") or {}),
        "ldm": verbs.section("ldm", cfg.get("ldm") or {}),
        "ldae": verbs.section("ldae", cfg.get("ldae") or {}),
        "images": dict(cfg.get("images") or {}),
        "latents": dict(cfg.get("latents") or {}),
        "ddim": DDIMSettings.from_config(cfg.get("ddim")).as_config(),
    }
    sections["ldae"]["encoder"] = resolve_encoder_config(sections["ldae"]["encoder"], "ldae.encoder")
    network = sections["ldm"]["network"]
    network["latent_channels"] = int(sections["autoencoder"]["network"]["latent_channels"])
    return sections


def latent_shape(sections: Mapping[str, Any]) -> list[int] | None:
    """(C, X, Y, Z) of the latents: the image shape over 2^(levels - 1) of the autoencoder; None without a shape."""
    shape = sections["images"].get("shape")
    if not shape:
        return None
    ae = sections["autoencoder"]["network"]
    factor = 2 ** (len(ae["channels"]) - 1)
    return [int(ae["latent_channels"]), *(int(s) // factor for s in shape)]


def _convert(args: argparse.Namespace, sections: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """Our state dicts of the three model folders, each checked by a strict load into the built network."""
    from ldae.models import official, official_encoder
    from ldae.models.semantic_encoder import build_semantic_encoder

    ae_network = sections["autoencoder"]["network"]
    ldm_network = sections["ldm"]["network"]
    enc_cfg = {**sections["ldae"]["encoder"], "pretrained_path": None}
    decoder = _read_state(args.decoder, "decoder.pth")
    ae = official.autoencoder_state_dict_from_official(
        _read_state(args.autoencoder, "autoencoderkl.pth"), ae_network, str(args.autoencoder)
    )
    ldm = official.ldm_state_dict_from_official(decoder, ldm_network, str(args.decoder))
    estimator = official.estimator_state_dict_from_official(
        decoder, ldm_network, int(enc_cfg["y_dim"]), str(args.decoder)
    )
    with torch.device("meta"):
        expected = build_semantic_encoder(enc_cfg).state_dict()
    encoder = official_encoder.encoder_from_official(
        _read_state(args.encoder, "encoder.pth"), expected, str(args.encoder)
    )
    ldae = {f"encoder.{k}": v for k, v in encoder.items()}
    ldae.update({f"estimator.{k}": v for k, v in estimator.items() if not k.startswith("ldm.")})
    return {"autoencoder": ae, "ldm": ldm, "ldae": ldae}


def _folder_contents(name: str, sections: Mapping[str, Any], sources: Mapping[str, Any]) -> tuple[dict, dict]:
    """(config.yaml dict, summary.json dict) of one model folder, in the training rules' layout."""
    shape = latent_shape(sections)
    scale = sections["latents"].get("scale_factor", OFFICIAL_SCALE_FACTOR)
    latents = {"shape": shape[1:] if shape else None, "scale_factor": scale}
    ldm_cfg = sections["ldm"]
    if name == "autoencoder":
        config = {
            "stage": "autoencoder",
            "config": sections["autoencoder"],
            "images": sections["images"],
            "warnings": [],
        }
    elif name == "ldm":
        config = {"stage": "ldm", "config": ldm_cfg, "latents": latents}
    else:
        config = {
            "stage": "ldae",
            "config": sections["ldae"],
            "images": sections["images"],
            "ddim": sections["ddim"],
            "ldm": {"network": ldm_cfg["network"], "diffusion": ldm_cfg["diffusion"]},
            "latents": latents,
            "warnings": [],
        }
    summary = {
        "stage": name,
        "imported": True,
        "selected_checkpoint": "the authors' released weights",
        "sources": dict(sources),
    }
    return config, summary


def _publish(folder: Path, weights: Mapping[str, torch.Tensor], config: Mapping, summary: Mapping) -> None:
    """The model folder (:func:`ldae.models.io.publish`) written in a temporary sibling, then renamed into place."""
    from ldae.models import io

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        io.publish(tmp, {k: v.contiguous() for k, v in weights.items()}, config, summary)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_official(args: argparse.Namespace) -> dict[str, Path]:
    """Convert and publish; returns the written folders by name."""
    sections = resolved_sections(_workflow_config(args.config))
    files = {"autoencoder": args.autoencoder, "encoder": args.encoder, "decoder": args.decoder}
    sources = {
        name: {"file": str(Path(path).name), "sha256": _sha256(Path(path))}
        for name, path in files.items()
        if Path(path).is_file()
    }
    weights = _convert(args, sections)
    out = Path(args.out_dir)
    written = {}
    for name, state in weights.items():
        config, summary = _folder_contents(name, sections, sources)
        _publish(out / name, state, config, summary)
        _check_loads(out, name)
        written[name] = out / name
    if not args.no_scale:
        scale = sections["latents"].get("scale_factor", OFFICIAL_SCALE_FACTOR)
        if scale is None:
            raise SystemExit(
                "import-official: latents.scale_factor is null (computed from training latents): "
                "run encode_latents instead, or use --no-scale"
            )
        (out / "latents").mkdir(parents=True, exist_ok=True)
        (out / "latents" / "scale.json").write_text(
            json.dumps(
                {"scale_factor": float(scale), "source": "latents.scale_factor (authors' code: 0.8730)"}, indent=2
            )
        )
        written["latents"] = out / "latents"
    if args.probe:
        written["official_probe"] = _write_probe(args, out / "official_probe")
    return written


def _check_loads(out: Path, name: str) -> None:
    """The published folder loads through ldae.models.io exactly as a trained one (strict)."""
    from ldae.models import io

    folder = out / name
    if name == "autoencoder":
        io.load_autoencoder(folder)
    elif name == "ldm":
        io.load_ldm(folder)
    else:
        io.load_ldae(folder, out / "ldm")


def _write_probe(args: argparse.Namespace, folder: Path) -> Path:
    from ldae.evaluation.probe_file import write_official_probe
    from ldae.models import io

    if not (args.probe_mean and args.probe_std):
        raise SystemExit("import-official: --probe needs --probe-mean and --probe-std (semantic_mean/std.pt)")
    folder.mkdir(parents=True, exist_ok=True)
    write_official_probe(args.probe, args.probe_mean, args.probe_std, io.probe_file(folder))
    return folder


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldae import-official", description=__doc__.split("\n\n")[0])
    p.add_argument("--autoencoder", type=Path, required=True, help="autoencoderkl.pth")
    p.add_argument("--encoder", type=Path, required=True, help="encoder.pth")
    p.add_argument("--decoder", type=Path, required=True, help="decoder.pth")
    p.add_argument("--probe", type=Path, default=None, help="optional: the authors' AD-vs-CN probe checkpoint")
    p.add_argument("--probe-mean", type=Path, default=None, help="semantic_mean.pt (with --probe)")
    p.add_argument("--probe-std", type=Path, default=None, help="semantic_std.pt (with --probe)")
    p.add_argument(
        "--config",
        required=True,
        help="workflow config (config.yaml or a JSON object) whose autoencoder/ldm/ldae/images sections "
        "size the networks (+ latents.scale_factor, ddim recorded for io.load_pipeline)",
    )
    p.add_argument("--out-dir", type=Path, required=True, help="the models folder to write (e.g. output/models)")
    p.add_argument(
        "--no-scale",
        action="store_true",
        help="do not write latents/scale.json (the workflow's encode_latents writes the latents folder)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ldae.models.official import OfficialWeightsError
    from ldae.models.official_encoder import OfficialWeightsError as EncoderWeightsError

    try:
        written = import_official(args)
    except (OfficialWeightsError, EncoderWeightsError) as e:
        print(f"import-official: {e}", file=sys.stderr)
        return 1
    for name, folder in written.items():
        print(f"import-official: wrote {folder} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
