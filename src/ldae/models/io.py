"""The ONE owner of model folders: their file names, publishing them, and every loader (trained and imported).

Every training rule writes one folder with ``weights.pt`` (plain tensors, read with ``weights_only=True``),
``config.yaml`` (the resolved config it was trained with), ``summary.json`` and ``metrics.csv``::

    models/autoencoder/   rule train_autoencoder          models/ldm/   rule train_ldm (final EMA weights)
    models/latents/{latents.npy, index.tsv, scale.json}   rule encode_latents (:class:`ldae.data.latents.LatentStore`)
    models/ldae/          rule train_ldae (best val SSIM)  models/dae/, models/supervised_{ad,age}/   the baselines

Loaders take model FOLDERS (nobody else spells ``weights.pt``/``config.yaml``); missing or mismatching files are
errors naming the file, never a silently random network. One pipeline class per model
(:mod:`ldae.models.pipelines`)::

    ae = load_autoencoder("models/autoencoder")
    unet = load_ldm("models/ldm")                                # frozen, eval
    schedule = load_schedule("models/ldm")                       # T=1000 linear betas
    encoder, estimator = load_ldae("models/ldae", "models/ldm")
    pipe = load_pipeline("output/models", device="cuda")         # LDAEPipeline of the four folders
    dae = load_dae("models/dae")                                 # DAEPipeline
    supervised = load_supervised("models/supervised_ad")         # SupervisedEncoder (.encoder: the features)

Latent convention: the diffusion models work on ``scale * z`` (``scale`` from ``scale.json``);
:meth:`LDAEPipeline.decode` divides by it before the AE decoder.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from ldae.diffusion import DDIMSettings
from ldae.files import atomic_output, write_text

from .ldm_unet import build_ldm_unet
from .pipelines import DAEPipeline, EncoderPipeline, LDAEPipeline

__all__ = [
    "WEIGHTS",
    "CONFIG",
    "SUMMARY",
    "METRICS",
    "PROBE",
    "weights_file",
    "config_file",
    "probe_file",
    "read_config",
    "stage_section",
    "save_weights",
    "save_config",
    "publish",
    "load_autoencoder",
    "load_ldm",
    "load_schedule",
    "load_ldae",
    "load_scale_factor",
    "ldae_state_dicts",
    "load_ldae_pipeline",
    "load_pipeline",
    "load_dae",
    "load_supervised",
    "load_frozen_unet",
    "load_unet_state_dict",
    "extract_state_dict",
    "LDAEPipeline",
    "DAEPipeline",
    "EncoderPipeline",
    "read_tensor_file",
    "load_official_encoder",
]

# ------------------------------------------------------------------------------------------- the folder
WEIGHTS, CONFIG, SUMMARY, METRICS = "weights.pt", "config.yaml", "summary.json", "metrics.csv"
PROBE = "probe.pt"  # the folder of an imported probe (rule import_official): ldae.evaluation.probe_file format


def weights_file(folder: str | os.PathLike) -> Path:
    return Path(folder) / WEIGHTS


def config_file(folder: str | os.PathLike) -> Path:
    return Path(folder) / CONFIG


def probe_file(folder_or_file: str | os.PathLike) -> Path:
    """The probe file of a probe folder (a file is returned as it is)."""
    path = Path(folder_or_file)
    return path / PROBE if path.is_dir() else path


def read_config(cfg: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A model folder's ``config.yaml`` (the folder, or the file itself) or an already loaded dict."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    path = Path(cfg)
    if path.is_dir():
        path = config_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path} (written next to the weights by the training rule)")
    return yaml.safe_load(path.read_text()) or {}


def stage_section(cfg: str | os.PathLike | Mapping[str, Any], stage: str | None = None) -> dict[str, Any]:
    """The resolved stage section inside a ``config.yaml`` (``cfg["config"]``), or ``cfg`` itself if bare."""
    data = read_config(cfg)
    if "config" in data and "stage" in data:
        if stage is not None and data["stage"] != stage:
            raise ValueError(f"config of stage {data['stage']!r} given where stage {stage!r} is expected")
        return dict(data["config"])
    return data


def save_weights(state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike) -> None:
    """``weights.pt``: plain tensors only, so downstream rules load them with ``weights_only=True``."""
    with atomic_output(weights_file(folder)) as tmp:
        torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, tmp)


def save_config(config: Mapping[str, Any], folder: str | os.PathLike) -> None:
    write_text(config_file(folder), yaml.safe_dump(dict(config), sort_keys=False))


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def publish(
    out_dir: str | os.PathLike,
    weights: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    links: Mapping[str, str | os.PathLike] = (),
) -> None:
    """A model folder: weights.pt, config.yaml, summary.json, plus ``links`` (name -> file, hard-linked when the
    file system allows, e.g. the run's best.ckpt/last.ckpt: no extra disk)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(weights, out_dir)
    for name, source in dict(links).items():
        if Path(source).is_file():
            _link_or_copy(Path(source), out_dir / name)
    write_text(out_dir / SUMMARY, json.dumps(dict(summary), indent=2, default=str))
    save_config(config, out_dir)


# ------------------------------------------------------------------------------------------- the loaders
def _weights(folder: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    path = weights_file(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}; run the rule that trains them")
    return torch.load(path, map_location="cpu", weights_only=True)


def _under(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _strict_load(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    load_unet_state_dict(model, dict(sd), source, "the config.yaml next to it")


def _frozen(model: nn.Module, device) -> nn.Module:
    return model.requires_grad_(False).eval().to(device)


def load_autoencoder(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained stage-1 MONAI ``AutoencoderKL`` in eval mode (``requires_grad`` off).

    ``ae.encode(x) -> (z_mu, z_sigma)`` (use :func:`ldae.models.encode_mean` for the posterior mean), ``ae.decode(z)``.
    """
    from .autoencoder import build_autoencoder

    ae = build_autoencoder(stage_section(folder, "autoencoder")["network"])
    _strict_load(ae, _weights(folder, "autoencoder"), str(weights_file(folder)))
    return _frozen(ae, device)


def _ldm_network(cfg) -> dict[str, Any]:
    data = read_config(cfg)
    if data.get("stage") == "ldae":
        return dict(data["ldm"]["network"])
    return dict(stage_section(data, "ldm")["network"])


def load_ldm(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained stage-2 latent DDPM U-Net (final EMA weights), frozen, eval mode.

    ``unet(x_t, timesteps=t) -> eps``, on scaled latents. A missing file or an architecture mismatch raises.
    """
    unet = build_ldm_unet(_ldm_network(folder))
    _strict_load(unet, _weights(folder, "stage-2 LDM"), str(weights_file(folder)))
    return _frozen(unet, device)


def load_schedule(cfg):
    """The :class:`~ldae.diffusion.DiffusionSchedule` the LDM was trained with (LDM or LDAE folder/config)."""
    from ldae.diffusion import DiffusionSchedule

    data = read_config(cfg)
    diffusion = data["ldm"]["diffusion"] if data.get("stage") == "ldae" else stage_section(data, "ldm")["diffusion"]
    return DiffusionSchedule.from_config(diffusion)


def load_scale_factor(latents_dir: str | os.PathLike) -> float:
    """The latent scale factor (1 / std over the training latents) written by rule encode_latents."""
    from ldae.data.latents import LatentStore

    return LatentStore(Path(latents_dir)).scale_factor()


def ldae_state_dicts(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an LDAE ``weights.pt`` into (semantic encoder, estimator without the frozen LDM) state dicts."""
    enc, est = _under(sd, "encoder."), _under(sd, "estimator.")
    if not enc or not est:
        raise ValueError("not an LDAE weights file: expected keys under 'encoder.' and 'estimator.'")
    return enc, est


def _untrained_encoder(enc_cfg: Mapping[str, Any]):
    """The semantic encoder of a config, without its ImageNet init (trained weights replace it)."""
    from .semantic_encoder import build_semantic_encoder

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone weights.*not found.*")
        return build_semantic_encoder({**enc_cfg, "pretrained_path": None})


def load_ldae(folder: str | os.PathLike, ldm: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(encoder, estimator)`` of the trained LDAE, eval mode, gradients off.

    * ``encoder(image) -> y_sem`` (B, 768): the 2.5-D semantic encoder on the IMAGE (B, 1, X, Y, Z) in [0, 1];
    * ``estimator(x_t, t, y_sem, return_eps=True) -> (G, eps_hat)``: frozen LDM + trained decoder branch, on scaled
      latents; ``ldae.diffusion.guided_eps_fn(estimator, y_sem, schedule, cfg guidance)`` gives the eps function
      for ``ddim_sample`` / ``ddim_invert``.

    ``folder``: the LDAE's (encoder + branch; the frozen LDM is not stored twice), ``ldm``: the stage-2 folder (hard
    error if absent or not the architecture recorded in the LDAE config).
    """
    from .gradient_estimator import GradientEstimator

    data = read_config(folder)
    section = stage_section(data, "ldae")
    enc_sd, est_sd = ldae_state_dicts(_weights(folder, "LDAE"))
    encoder = _untrained_encoder(section["encoder"])
    _strict_load(encoder, enc_sd, str(weights_file(folder)))
    unet = load_frozen_unet(_ldm_network(data), weights_file(ldm))
    est_cfg = section["estimator"]
    estimator = GradientEstimator(
        unet,
        y_dim=encoder.y_dim,
        share_middle_block=bool(est_cfg["share_middle_block"]),
        init_branch_from_ldm=False,
        dropout=est_cfg["dropout"],
    )
    own = {k: v for k, v in estimator.state_dict().items() if not k.startswith("ldm.")}
    missing = sorted(set(own) - set(est_sd))
    unexpected = sorted(set(est_sd) - set(own))
    bad = sorted(k for k in set(own) & set(est_sd) if own[k].shape != est_sd[k].shape)
    if missing or unexpected or bad:
        raise ValueError(
            f"LDAE weights {weights_file(folder)} do not match the estimator of its config: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {bad[:5]}"
        )
    estimator.load_state_dict(est_sd, strict=False)
    return _frozen(encoder, device), _frozen(estimator, device)


def _ddim(ddim, recorded) -> DDIMSettings:
    ddim = recorded if ddim is None else ddim
    return ddim if isinstance(ddim, DDIMSettings) else DDIMSettings.from_config(ddim)


def load_ldae_pipeline(
    autoencoder: str | os.PathLike,
    latents: str | os.PathLike,
    ldm: str | os.PathLike,
    ldae: str | os.PathLike,
    device: str | torch.device = "cpu",
    ddim=None,
) -> LDAEPipeline:
    """The LDAE chain from its four model folders as the ONE :class:`ldae.models.pipelines.LDAEPipeline` every
    evaluation rule uses. ``ddim`` (DDIMSettings or a ``ddim`` config section): None -> the settings train_ldae
    (or import-official) recorded in ``ldae/config.yaml``, else the defaults (the authors' clamp and grid)."""
    ae = load_autoencoder(autoencoder, device)
    encoder, estimator = load_ldae(ldae, ldm, device)
    ldae_config = read_config(ldae)
    return LDAEPipeline(
        ae,
        estimator,
        encoder,
        load_schedule(ldm),
        load_scale_factor(latents),
        stage_section(ldae_config, "ldae").get("guidance", "score"),
        _ddim(ddim, ldae_config.get("ddim")),
    )


def load_pipeline(models_dir: str | os.PathLike, device: str | torch.device = "cpu", ddim=None) -> LDAEPipeline:
    """Everything under ``<out_dir>/models`` (autoencoder/, latents/, ldm/, ldae/): :func:`load_ldae_pipeline`."""
    root = Path(models_dir)
    return load_ldae_pipeline(root / "autoencoder", root / "latents", root / "ldm", root / "ldae", device, ddim)


def load_dae(folder: str | os.PathLike, device: str | torch.device = "cpu", ddim=None) -> DAEPipeline:
    """The trained DAE baseline as a :class:`DAEPipeline` (eval mode, gradients off); ``ddim`` (DDIMSettings or a
    ``ddim`` section): None -> the settings recorded at training (else the defaults)."""
    from ldae.diffusion import DiffusionSchedule

    from .baselines import dae_for_config

    data = read_config(folder)
    cfg = data["config"]
    dae = dae_for_config(cfg, data["encoder"], pretrained=False)
    dae.load_state_dict(_under(_weights(folder, "DAE"), "dae."), strict=True)
    shape = tuple(int(s) for s in cfg["shape"]) if cfg["shape"] else None
    return DAEPipeline(
        _frozen(dae, device),
        DiffusionSchedule.from_config(cfg["diffusion"]),
        shape,
        bool(cfg["signed"]),
        _ddim(ddim, data.get("ddim")),
    )


def load_supervised(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained supervised encoder (``SupervisedEncoder``; ``.encoder`` gives the features), eval mode."""
    from .baselines import supervised_for_config

    data = read_config(folder)
    model = supervised_for_config(data["encoder"], pretrained=False)
    model.load_state_dict(_under(_weights(folder, f"supervised encoder ({data['task']})"), "model."), strict=True)
    return _frozen(model, device)


# ------------------------------------------------------------- the stage-2 checkpoint (never silently random)
_CKPT_KEY = "ldae.ldm_checkpoint"
_CONTAINER_KEYS = ("ema_state_dict", "ema", "state_dict", "model_state_dict", "model")
_PREFIXES = ("", "model.", "module.", "unet.", "ema_model.", "ema.module.", "ema.", "_orig_mod.")


def extract_state_dict(obj: Any, state_key: str | None = None) -> dict[str, torch.Tensor]:
    """Find the tensor state dict inside a loaded checkpoint (plain, or under ``state_key`` / a usual container)."""
    if state_key is not None:
        if not isinstance(obj, Mapping) or state_key not in obj:
            raise KeyError(f"checkpoint has no entry {state_key!r}")
        obj = obj[state_key]
    elif isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in _CONTAINER_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("no tensor state dict found in checkpoint")
    return dict(obj)


def _match_prefix(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    best, best_hits = sd, -1
    for p in _PREFIXES:
        cand = {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)} if p else sd
        hits = len(expected & cand.keys())
        if hits > best_hits:
            best, best_hits = cand, hits
    return best


def load_unet_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str, config_key: str) -> None:
    """Strictly load ``sd`` into ``model`` (common prefixes stripped) or raise ValueError naming file and key."""
    own = model.state_dict()
    sd = _match_prefix(sd, set(own))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or bad_shape:

        def few(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f", ... ({len(xs)} in all)" if len(xs) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if bad_shape:
            parts.append(
                "shape mismatches: " + few([f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in bad_shape])
            )
        raise ValueError(
            f"checkpoint {source} (config key {config_key}) does not match the network built from the config: "
            + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=True)


def load_frozen_unet(
    cfg: Mapping[str, Any] | None, ckpt_path: str | os.PathLike | None, state_key: str | None = None
) -> nn.Module:
    """Build the LDM U-Net from the ``ldm`` config section and load the stage-2 weights from ``ckpt_path``.

    Raises ``ValueError`` if no path is configured or the checkpoint does not match the architecture, and
    ``FileNotFoundError`` if the file is absent - a frozen, randomly initialised LDM would silently train nonsense
    (a fault of the authors' code). The checkpoint is a ``torch.save`` d state dict, or a dict holding one under
    ``ema_state_dict``/``ema``/``state_dict``/``model_state_dict``/``model`` (or ``state_key``); it is read with
    ``weights_only=True``. The returned U-Net is frozen and in eval mode.
    """
    if ckpt_path is None or str(ckpt_path).strip() == "":
        raise ValueError(f"no stage-2 LDM checkpoint configured: set {_CKPT_KEY} to the trained LDM weights")
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"stage-2 LDM checkpoint {path!r} (config key {_CKPT_KEY}) does not exist")
    unet = build_ldm_unet(cfg)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        sd = extract_state_dict(obj, state_key)
    except (KeyError, ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read a U-Net state dict from {path!r} (config key {_CKPT_KEY}): {e}") from e
    load_unet_state_dict(unet, sd, repr(path), _CKPT_KEY)
    unet.requires_grad_(False)
    unet.eval()
    return unet


# ------------------------------------------------------------------------------ the authors' released weights
def read_tensor_file(path: str | os.PathLike, what: str) -> Any:
    """A ``torch.save`` file read with ``weights_only=True``; errors name the file and ``what`` it should be."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"cannot read {what} from {path} with weights_only=True: {error}. Save only tensors "
            "(e.g. its state_dict) with torch.save and retry"
        ) from error


def load_official_encoder(
    path: str | os.PathLike, cfg: Mapping[str, Any] | None = None, device: str | torch.device = "cpu"
):
    """Our semantic encoder (eval mode, gradients off) holding the authors' released ``encoder.pth``.

    ``cfg``: ``ldae.encoder`` settings over the defaults, which ARE the authors' head (ConvNeXt-Small,
    raw [0, 1] input, linear scorer, q/k/v projections, y_sem = LayerNorm output). The mapping is strict
    (:func:`ldae.models.official_encoder.encoder_from_official`).
    """
    import warnings

    from .official_encoder import encoder_from_official
    from .semantic_encoder import build_semantic_encoder

    official = read_tensor_file(path, "the authors' semantic encoder (encoder.pth)")
    if not isinstance(official, Mapping):
        raise ValueError(f"{path}: expected a state dict (key -> tensor), got {type(official).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone weights.*not found.*")
        encoder = build_semantic_encoder({**(cfg or {}), "pretrained_path": None})
    encoder.load_state_dict(encoder_from_official(official, encoder.state_dict(), str(path)), strict=True)
    return encoder.requires_grad_(False).eval().to(device)
