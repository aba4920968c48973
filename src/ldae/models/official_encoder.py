"""The authors' released stage-3 semantic encoder (``encoder.pth``) and AD-vs-CN probe <-> our layouts.

Pure functions: state dicts (and tensors) in, state dicts out; no file I/O (files: :func:`ldae.models.io.
load_official_encoder`, :mod:`ldae.evaluation.probe_file`). Facts from the authors' code (paper-notes.md, "The
authors' code, exactly"); their code itself is not used.

``encoder.pth`` (the EMA encoder of their stage-3 checkpoint, 699 entries at the paper configuration) holds:

* ``backbone.backbone.*``: the ConvNeXt (stem summed to 1 channel, ``classifier.2`` = Identity) -> ours ``backbone.*``;
* ``slice_distributed.module.backbone.*``: the SAME tensors a second time (the module is registered twice) -> checked
  equal to the first copy, dropped;
* ``positional_encoding.pe`` ``[1, N, F]``: the sinusoidal table -> checked against our formula
  (:func:`~ldae.models.semantic_encoder.sinusoidal_positions`, which we compute on the fly), dropped;
* ``soft_attention.linear`` (Linear F -> 1) -> ``pool_score`` (``scorer: linear``);
* ``query_projection`` / ``key_projection`` / ``value_projection`` -> ``q_proj`` / ``k_proj`` / ``v_proj``
  (``qkv_proj: true``);
* ``cross_attention.*`` -> ``cross_attn.*``; ``layer_norm_after_attention`` -> ``norm`` (y_sem is its output:
  ``out_proj: false``).

Every mapping is STRICT: every tensor of the file is used (or checked and dropped), none of ours is missing, shapes
equal; an error names the key and the ``source`` (the file's name). Their probe: ``Linear(F -> 1)`` on z-scored
y_sem (``semantic_mean.pt`` / ``semantic_std.pt``), label AD = 0, CN = 1 (ours too: positive class CN).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .semantic_encoder import sinusoidal_positions

__all__ = [
    "OfficialWeightsError",
    "OFFICIAL_ENCODER_CONFIG",
    "PROBE_FORMAT",
    "official_encoder_key_map",
    "encoder_from_official",
    "encoder_to_official",
    "probe_from_official",
]

BACKBONE = "backbone.backbone."
DUPLICATE = "slice_distributed.module.backbone."
PE_KEY = "positional_encoding.pe"
OURS_BACKBONE = "backbone."
HEAD_RENAMES: dict[str, str] = {  # the authors' module name -> ours
    "soft_attention.linear": "pool_score",
    "query_projection": "q_proj",
    "key_projection": "k_proj",
    "value_projection": "v_proj",
    "cross_attention": "cross_attn",
    "layer_norm_after_attention": "norm",
}
PE_ATOL = 1e-4  # float32 sin/cos of angles up to ~N rad
PROBE_FORMAT = "ldae-linear-probe/1"

# the `ldae.encoder` settings under which our module has exactly the authors' layers (the defaults)
OFFICIAL_ENCODER_CONFIG: dict[str, Any] = {
    "backbone": "convnext_small",
    "input_mean": 0.0,
    "input_std": 1.0,
    "pe_dropout": 0.1,
    "scorer": "linear",
    "qkv_proj": True,
    "out_proj": False,
    "y_dim": None,
    "num_heads": 8,
    "attn_dropout": 0.1,
}
_HINTS = {
    "pool_score.": "ldae.encoder.scorer: linear",
    "q_proj.": "ldae.encoder.qkv_proj: true",
    "k_proj.": "ldae.encoder.qkv_proj: true",
    "v_proj.": "ldae.encoder.qkv_proj: true",
    "proj.": "ldae.encoder.out_proj: false",
}


class OfficialWeightsError(ValueError):
    """The given state dict is not the authors' layout, or does not fit our module as configured."""


def _hint(key: str) -> str:
    for prefix, setting in _HINTS.items():
        if key.startswith(prefix):
            return f" (the authors' head needs {setting})"
    return ""


def _our_key(official_key: str) -> str | None:
    """Our name of one of the authors' keys; None for the duplicate backbone and the PE buffer (checked, dropped)."""
    if official_key.startswith(BACKBONE):
        return OURS_BACKBONE + official_key[len(BACKBONE) :]
    if official_key.startswith(DUPLICATE) or official_key == PE_KEY:
        return None
    module, _, leaf = official_key.rpartition(".")
    for theirs, ours in HEAD_RENAMES.items():
        if module == theirs or module.startswith(theirs + "."):
            return ours + module[len(theirs) :] + "." + leaf
    raise KeyError(official_key)


def official_encoder_key_map(official_keys: Iterable[str], source: str = "encoder.pth") -> dict[str, str]:
    """``{authors' key: our key}`` for every key that maps (the duplicate backbone and the PE buffer do not);
    an unknown key is an :class:`OfficialWeightsError`."""
    out = {}
    for key in official_keys:
        try:
            ours = _our_key(key)
        except KeyError:
            raise OfficialWeightsError(
                f"{source}: unknown key {key!r}: not the authors' semantic-encoder layout "
                f"(expected {BACKBONE}*, {DUPLICATE}*, {PE_KEY} or "
                f"{', '.join(sorted(HEAD_RENAMES))})"
            ) from None
        if ours is not None:
            out[key] = ours
    return out


def _check_duplicate(official: Mapping[str, torch.Tensor], source: str) -> None:
    first = {k[len(BACKBONE) :] for k in official if k.startswith(BACKBONE)}
    second = {k[len(DUPLICATE) :] for k in official if k.startswith(DUPLICATE)}
    if second and second != first:
        odd = sorted(first ^ second)[:3]
        raise OfficialWeightsError(
            f"{source}: the two backbone copies ({BACKBONE}*, {DUPLICATE}*) hold different keys, e.g. {odd}"
        )
    for name in sorted(second):
        a, b = official[BACKBONE + name], official[DUPLICATE + name]
        if a.shape != b.shape or (not a.is_meta and not b.is_meta and not torch.equal(a, b)):
            raise OfficialWeightsError(
                f"{source}: {DUPLICATE}{name} differs from {BACKBONE}{name}: the backbone "
                "copies must be the same tensors (a corrupted or edited file?)"
            )


def _check_positions(pe: torch.Tensor, feat_dim: int, source: str) -> None:
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != feat_dim:
        raise OfficialWeightsError(f"{source}: {PE_KEY} has shape {list(pe.shape)}, expected [1, N, {feat_dim}]")
    if pe.is_meta:
        return
    ours = sinusoidal_positions(pe.shape[1], feat_dim)
    err = float((pe[0].float() - ours).abs().max())
    if err > PE_ATOL:
        raise OfficialWeightsError(
            f"{source}: {PE_KEY} differs from our sinusoidal encoding by {err:.3g} "
            f"(> {PE_ATOL}): we compute it with sinusoidal_positions, so it cannot be dropped"
        )


def _shape(value: Any) -> list:
    return list(value.shape) if hasattr(value, "shape") else list(value)


def encoder_from_official(
    official: Mapping[str, torch.Tensor], expected: Mapping[str, Any], source: str = "encoder.pth"
) -> dict[str, torch.Tensor]:
    """Our :class:`~ldae.models.semantic_encoder.SemanticEncoder` state dict from the authors' ``encoder.pth``.

    ``expected``: our encoder's ``state_dict()`` (tensors, meta tensors allowed, or shapes) at the intended
    config (:data:`OFFICIAL_ENCODER_CONFIG` for the paper's). Strict: every tensor of ``official`` used or
    checked-and-dropped, every key of ``expected`` filled, shapes equal. Values are not checked on meta tensors.
    """
    official = dict(official)
    key_map = official_encoder_key_map(official, source)
    _check_duplicate(official, source)
    if PE_KEY in official and "norm.weight" in expected:
        _check_positions(official[PE_KEY], int(_shape(expected["norm.weight"])[0]), source)
    out: dict[str, torch.Tensor] = {}
    for theirs, ours in key_map.items():
        if ours not in expected:
            raise OfficialWeightsError(
                f"{source}: {theirs!r} (our {ours!r}) has no place in our encoder as configured{_hint(ours)}"
            )
        want, got = _shape(expected[ours]), list(official[theirs].shape)
        if want != got:
            raise OfficialWeightsError(
                f"{source}: {theirs!r} has shape {got}, our {ours!r} {want} (check "
                "ldae.encoder.backbone / tiny_dims / num_heads)"
            )
        out[ours] = official[theirs]
    missing = sorted(set(expected) - set(out))
    if missing:
        raise OfficialWeightsError(
            f"{source}: no tensor for our {missing[:5]} ({len(missing)} in all){_hint(missing[0])}"
        )
    return out


def encoder_to_official(
    ours: Mapping[str, torch.Tensor], num_slices: int = 128, source: str = "our encoder state dict"
) -> dict[str, torch.Tensor]:
    """The authors' ``encoder.pth`` layout from our encoder's state dict (the authors' head: ``scorer: linear``,
    ``qkv_proj: true``, ``out_proj: false``): both backbone copies and the ``[1, num_slices, F]`` PE table."""
    inverse = {v: k for k, v in HEAD_RENAMES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        if key.startswith(OURS_BACKBONE):
            name = key[len(OURS_BACKBONE) :]
            out[BACKBONE + name], out[DUPLICATE + name] = value, value.clone()
            continue
        module, _, leaf = key.rpartition(".")
        head = module.split(".")[0]
        if head not in inverse or (head == "pool_score" and module != head):
            raise OfficialWeightsError(f"{source}: {key!r} has no place in the authors' encoder{_hint(key)}")
        out[inverse[head] + module[len(head) :] + "." + leaf] = value
    for needed in ("pool_score.weight", "q_proj.weight", "norm.weight"):
        if needed not in ours:
            raise OfficialWeightsError(f"{source}: no {needed!r}{_hint(needed)}")
    feat_dim = ours["norm.weight"].shape[0]
    out[PE_KEY] = sinusoidal_positions(int(num_slices), int(feat_dim))[None]
    return out


def _probe_layer(state: Mapping[str, Any], source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The one ``weight [1, D]`` and ``bias [1]`` of a Linear(D -> 1) state dict (any prefix)."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a Lightning checkpoint
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    weights = [k for k in tensors if k == "weight" or k.endswith(".weight")]
    biases = [k for k in tensors if k == "bias" or k.endswith(".bias")]
    if len(weights) != 1 or len(biases) != 1 or len(tensors) != 2:
        raise OfficialWeightsError(
            f"{source}: expected the state dict of ONE Linear(D -> 1) (a 'weight' and a "
            f"'bias', any prefix), found tensors {sorted(tensors)[:6]}"
        )
    weight, bias = tensors[weights[0]], tensors[biases[0]]
    if weight.ndim != 2 or weight.shape[0] != 1 or bias.shape != (1,):
        raise OfficialWeightsError(
            f"{source}: {weights[0]!r} {list(weight.shape)} / {biases[0]!r} {list(bias.shape)} is not a Linear(D -> 1)"
        )
    return weight, bias


def _vector(value: Any, dim: int, what: str, source: str) -> torch.Tensor:
    if isinstance(value, Mapping):  # a saved dict holding one tensor
        inner = [v for v in value.values() if isinstance(v, torch.Tensor)]
        value = inner[0] if len(inner) == 1 else value
    if not isinstance(value, torch.Tensor):
        raise OfficialWeightsError(f"{source}: {what} is a {type(value).__name__}, expected a tensor of {dim} values")
    vec = value.detach().reshape(-1).to(torch.float64)
    if vec.numel() != dim:
        raise OfficialWeightsError(f"{source}: {what} has {vec.numel()} values, the probe has {dim} inputs")
    if not torch.isfinite(vec).all():
        raise OfficialWeightsError(f"{source}: {what} holds non-finite values")
    return vec


def probe_from_official(
    probe_state: Mapping[str, Any], mean: Any, std: Any, source: str = "disease_classifier.ckpt"
) -> dict[str, Any]:
    """Our probe-file content (:mod:`ldae.evaluation.probe_file`, format :data:`PROBE_FORMAT`) from the authors'
    Linear(D -> 1) AD-vs-CN classifier (a Lightning checkpoint dict or a plain state dict) and their z-score
    ``mean`` / ``std`` of y_sem (``semantic_mean.pt`` / ``semantic_std.pt``). Label AD = 0, CN = 1 in both,
    so the logit is for CN (our ``positive_class``)."""
    weight, bias = _probe_layer(probe_state, source)
    dim = weight.shape[1]
    mean = _vector(mean, dim, "the z-score mean (semantic_mean.pt)", source)
    std = _vector(std, dim, "the z-score std (semantic_std.pt)", source)
    if (std <= 0).any():
        raise OfficialWeightsError(
            f"{source}: the z-score std (semantic_std.pt) has {int((std <= 0).sum())} non-positive value(s)"
        )
    return {
        "format": PROBE_FORMAT,
        "task": "classification",
        "positive_class": "CN",
        "labels": "AD=0,CN=1",
        "feature_mean": mean,
        "feature_std": std,
        "weight": weight.detach().to(torch.float32).clone(),
        "bias": bias.detach().to(torch.float32).clone(),
        "target_offset": 0.0,
        "target_scale": 1.0,
        "origin": f"authors' probe {source}",
    }
