"""Stage-1 networks: MONAI ``AutoencoderKL``, ``PatchDiscriminator`` and the LPIPS perceptual loss (no downloads).

Config keys (section ``autoencoder``; defaults = the paper, Table 2 + authors' code, which is also the layout of the
UK Biobank brain LDM autoencoder of the MONAI model zoo):
    spatial_dims: 3, in_channels: 1, out_channels: 1, channels: [64, 128, 128, 128], num_res_blocks: 2,
    attention_levels: [false, false, false, false], latent_channels: 3, norm_num_groups: 32, norm_eps: 1.0e-6,
    with_encoder_nonlocal_attn: false, with_decoder_nonlocal_attn: false, use_checkpoint: false,
    disc_channels: 64, disc_num_layers: 3, disc_norm: "BATCH",
    perceptual_network: "squeeze", perceptual_fake_3d_ratio: 0.5.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

from ldae.verbs import schema_defaults

__all__ = [
    "AE_DEFAULTS",
    "build_autoencoder",
    "build_discriminator",
    "load_pretrained_autoencoder",
    "build_perceptual_loss",
    "encode_mean",
    "latent_scale_factor",
]

AE_DEFAULTS: dict[str, Any] = {  # what the stage fixes + the `autoencoder` section's defaults (the schema's)
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    **schema_defaults("autoencoder.network"),
    "perceptual_network": "squeeze",
    "perceptual_fake_3d_ratio": schema_defaults("autoencoder.perceptual_fake_3d_ratio"),
}


def _cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(AE_DEFAULTS)
    out.update({k: v for k, v in (cfg or {}).items() if k in AE_DEFAULTS})
    return out


def build_autoencoder(cfg: Mapping[str, Any] | None = None) -> AutoencoderKL:
    """MONAI ``AutoencoderKL`` from the ``autoencoder`` config section (unknown keys ignored)."""
    c = _cfg(cfg)
    return AutoencoderKL(
        spatial_dims=int(c["spatial_dims"]),
        in_channels=int(c["in_channels"]),
        out_channels=int(c["out_channels"]),
        num_res_blocks=c["num_res_blocks"],
        channels=tuple(int(x) for x in c["channels"]),
        attention_levels=tuple(bool(x) for x in c["attention_levels"]),
        latent_channels=int(c["latent_channels"]),
        norm_num_groups=int(c["norm_num_groups"]),
        norm_eps=float(c["norm_eps"]),
        with_encoder_nonlocal_attn=bool(c["with_encoder_nonlocal_attn"]),
        with_decoder_nonlocal_attn=bool(c["with_decoder_nonlocal_attn"]),
        use_checkpoint=bool(c["use_checkpoint"]),
    )


def build_discriminator(cfg: Mapping[str, Any] | None = None) -> PatchDiscriminator:
    """MONAI ``PatchDiscriminator`` (3 layers, 64 channels by default) for the least-squares adversarial loss."""
    c = _cfg(cfg)
    return PatchDiscriminator(
        spatial_dims=int(c["spatial_dims"]),
        channels=int(c["disc_channels"]),
        in_channels=int(c["out_channels"]),
        out_channels=1,
        num_layers_d=int(c["disc_num_layers"]),
        norm=c["disc_norm"],
    )


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("state_dict", "model", "autoencoder", "model_state_dict"):
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("no tensor state dict found")
    sd = dict(obj)
    for p in ("autoencoder.", "model.", "module."):
        if all(k.startswith(p) for k in sd):
            sd = {k[len(p) :]: v for k, v in sd.items()}
    return sd


def _where(path, config_key: str) -> str:
    """Where weights were looked for, for a warning: the path, or that the config key is empty."""
    return f"config {config_key} is empty" if path is None or str(path).strip() == "" else f"no file {path}"


def load_pretrained_autoencoder(model: AutoencoderKL, path: str | os.PathLike | None) -> AutoencoderKL:
    """Initialise ``model`` from a local checkpoint (e.g. the UK Biobank brain LDM autoencoder of the MONAI zoo).

    The file is read with ``torch.load(..., weights_only=True)``. Both the MONAI-Generative ("old") key layout of the
    zoo bundle and the current MONAI layout are accepted (``AutoencoderKL.load_old_state_dict`` renames the old
    keys, a plain state dict loads directly). An absent ``path`` keeps the random initialisation with a warning; a
    checkpoint that does not fit the configured architecture raises ``ValueError``. Returns ``model``.
    """
    if path is None or str(path).strip() == "" or not os.path.isfile(os.fspath(path)):
        warnings.warn(
            f"autoencoder initial weights not found ({_where(path, 'autoencoder.init_weights')}): stage 1 "
            "starts from a RANDOM initialisation "
            "(the paper starts from the UK Biobank brain LDM autoencoder of the MONAI model zoo)",
            stacklevel=2,
        )
        return model
    path = os.fspath(path)
    try:
        sd = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read an autoencoder state dict from {path!r}: {e}") from e
    own = model.state_dict()
    try:
        if set(sd) == set(own):
            model.load_state_dict(sd, strict=True)
        else:  # MONAI-Generative layout (zoo bundle): let MONAI rename the keys
            with contextlib.redirect_stdout(io.StringIO()):
                model.load_old_state_dict(dict(sd))
    except (KeyError, RuntimeError) as e:
        missing = sorted(set(own) - set(sd))[:5]
        unexpected = sorted(set(sd) - set(own))[:5]
        raise ValueError(
            f"autoencoder checkpoint {path!r} does not match the configured AutoencoderKL (section 'autoencoder'): "
            f"{type(e).__name__}: {str(e)[:400]}; e.g. missing {missing}, unexpected {unexpected}"
        ) from e
    return model


def _map_squeezenet_to_lpips(net: nn.Module, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``squeezenet1_1`` keys ``features.<i>.*`` -> lpips ``slice<k>.<i>.*``."""
    where = {}
    for sname, sl in net.named_children():
        for idx, _ in sl.named_children():
            where[idx] = sname
    out = {}
    for k, v in sd.items():
        if not k.startswith("features."):
            continue
        idx, rest = k[len("features.") :].split(".", 1)
        if idx in where:
            out[f"{where[idx]}.{idx}.{rest}"] = v
    return out


def build_perceptual_loss(
    cfg: Mapping[str, Any] | None = None, weights_path: str | os.PathLike | None = None
) -> nn.Module | None:
    """MONAI ``PerceptualLoss`` (LPIPS SqueezeNet, 2.5-D "fake 3-D", ratio 0.5) with weights from a LOCAL file only.

    MONAI builds ``lpips.LPIPS(pretrained=..., net=...)``, which always asks torchvision for the ImageNet SqueezeNet
    backbone (a download), whatever ``pretrained`` says: the backbone flag is ``pnet_rand``, not ``pretrained``.
    So the ``PerceptualLoss`` is constructed with that one call replaced by ``LPIPS(pnet_rand=True)`` - random
    backbone, no network - and the backbone comes from ``weights_path``. The LPIPS linear calibration layers ship
    inside the ``lpips`` package (``lpips/weights/v0.1/squeeze.pth``) and are read from there.

    ``weights_path`` holds either a torchvision ``squeezenet1_1`` state dict (``features.*``) or a full LPIPS state
    dict (``net.slice*``/``lin*``), read with ``weights_only=True``. Absent file -> ``None`` and a warning (the caller
    disables the perceptual term). The returned module is frozen and in eval mode.
    """
    c = _cfg(cfg)
    if weights_path is None or str(weights_path).strip() == "" or not os.path.isfile(os.fspath(weights_path)):
        warnings.warn(
            f"perceptual-loss weights not found ({_where(weights_path, 'autoencoder.perceptual_weights')}): the "
            "LPIPS term of the stage-1 loss is DISABLED "
            "(no download is attempted; provide a local torchvision squeezenet1_1 / LPIPS state dict)",
            stacklevel=2,
        )
        return None
    import lpips  # noqa: F401  (MONAI's optional import; a hard requirement here)
    import monai.losses.perceptual as mperc

    net_type = str(c["perceptual_network"])
    real_lpips = mperc.LPIPS

    def _local_lpips(pretrained: bool = True, net: str = "alex", verbose: bool = False, **kw: Any) -> nn.Module:
        return real_lpips(pretrained=pretrained, net=net, verbose=verbose, pnet_rand=True, **kw)

    mperc.LPIPS = _local_lpips
    try:
        with warnings.catch_warnings():  # torchvision's deprecation notes about lpips' `pretrained=` call
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            loss = mperc.PerceptualLoss(
                spatial_dims=int(c["spatial_dims"]),
                network_type=net_type,
                is_fake_3d=int(c["spatial_dims"]) == 3,
                fake_3d_ratio=float(c["perceptual_fake_3d_ratio"]),
                pretrained=True,
            )
    finally:
        mperc.LPIPS = real_lpips

    fn = loss.perceptual_function
    path = os.fspath(weights_path)
    try:
        sd = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read perceptual-loss weights from {path!r}: {e}") from e
    if any(k.startswith("net.") for k in sd):  # a full LPIPS state dict
        res = fn.load_state_dict(sd, strict=False)
        if res.missing_keys or any(not k.startswith("net.") and not k.startswith("lin") for k in res.unexpected_keys):
            raise ValueError(f"LPIPS state dict {path!r} does not match lpips.LPIPS(net={net_type!r}): {res}")
    else:  # a torchvision backbone state dict
        mapped = _map_squeezenet_to_lpips(fn.net, sd)
        own = fn.net.state_dict()
        if set(mapped) != set(own) or any(own[k].shape != mapped[k].shape for k in own):
            raise ValueError(
                f"{path!r} is not a torchvision {net_type} backbone state dict matching LPIPS "
                f"({len(mapped)} of {len(own)} tensors matched)"
            )
        fn.net.load_state_dict(mapped, strict=True)
    loss.requires_grad_(False)
    loss.eval()
    return loss


def encode_mean(ae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean ``z_mu`` of the AutoencoderKL (the deterministic latent used for stages 2 and 3)."""
    z_mu, _ = ae.encode(x)
    return z_mu


def latent_scale_factor(latents: torch.Tensor | Iterable[torch.Tensor]) -> float:
    """``1 / std`` over all latent values (Rombach et al. App. G), so ``scale * z`` has unit variance.

    Accepts one tensor or an iterable of tensors (streamed in float64, so a whole cached data set fits).
    """
    if isinstance(latents, torch.Tensor):
        latents = [latents]
    n, s, ss = 0, 0.0, 0.0
    for z in latents:
        z = z.detach().to(torch.float64)
        n += z.numel()
        s += float(z.sum())
        ss += float((z * z).sum())
    if n < 2:
        raise ValueError("latent_scale_factor needs at least two latent values")
    var = (ss - s * s / n) / (n - 1)
    if not var > 0:
        raise ValueError("latents have zero variance: cannot compute a scale factor")
    return float(var**-0.5)
