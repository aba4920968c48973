"""The authors' released weights <-> our modules: pure state-dict conversions (no file I/O).

The authors (Lozupone et al., code ``GabrieleLozupone/LDAE``) release ``autoencoderkl.pth`` (a MONAI-Generative
``AutoencoderKL`` state dict, old key layout) and ``decoder.pth`` (the stage-3 gradient estimator; its frozen part IS
the stage-2 EMA latent DDPM, there is no separate LDM file). The semantic encoder (``encoder.pth``) and the probe are
mapped in :mod:`ldae.models.official_encoder`.

Every function takes a state dict and the config section(s) our network is built from, builds that network on the
``meta`` device (no memory) to know the expected keys and shapes, and returns our (or the authors') state dict.
Conversion is STRICT: every source tensor is used, none of ours is missing, every shape is checked; an error
(:class:`OfficialWeightsError`) names the key and the ``source``. A small configuration with small weights in the
same layout converts the same way, so the mapping is tested by round trips at a tiny size.

Key rules (authors -> ours):

* autoencoder: MONAI's ``AutoencoderKL.load_old_state_dict`` renames, applied strictly: attention ``X.to_q/to_k/to_v``
  -> ``X.attn.to_q/...``, ``X.proj_attn`` -> ``X.attn.out_proj``, upsampling ``conv`` -> ``postconv`` (the authors'
  autoencoder has no attention: only ``decoder.blocks.{3,6,9}.conv`` -> ``postconv`` applies).
* LDM (guided-diffusion layout -> MONAI ``DiffusionModelUNet``): ``input_blocks.0.0`` -> ``conv_in.conv``;
  ``input_blocks.k`` -> ``down_blocks.L.{resnets.R, attentions.R, downsampler}``; ``middle_block.{0,1,2}`` ->
  ``middle_block.{resnet_1, attention, resnet_2}``; ``output_blocks.k`` -> ``up_blocks.U.{resnets.R, attentions.R,
  upsampler}``; ``out.{0,2}`` -> ``out.0``, ``out.2.conv``; ``time_embed`` unchanged. Residual blocks:
  ``in_layers.0`` -> ``norm1``, ``in_layers.2`` -> ``conv1.conv``, ``emb_layers.1`` -> ``time_emb_proj``,
  ``out_layers.0`` -> ``norm2``, ``out_layers.3`` -> ``conv2.conv``, ``skip_connection`` -> ``skip_connection.conv``,
  ``emb_z_layers.1`` -> ``cond_emb_proj``. Attention: ``norm`` unchanged; ``qkv`` Conv1d ``[3C, C, 1]`` -> rows
  q, k, v (per head, guided-diffusion's legacy order; one head: rows ``[0:C], [C:2C], [2C:3C]``) -> ``attn.to_q/
  to_k/to_v`` ``[C, C]``; ``proj_out`` ``[C, C, 1]`` -> ``attn.out_proj`` ``[C, C]``.
* estimator: the LDM keys under our ``ldm.`` prefix; ``label_emb`` -> ``y_proj``, ``shift_middle_block`` ->
  ``branch.middle_block``, ``shift_output_blocks`` -> ``branch.up_blocks``, ``shift_out`` -> ``branch.out``.

The imported networks compute the authors' function only with ``ldm.network.resample_axes: last_two`` and
``ldm.network.norm_eps: 1.0e-5`` (checked here) and ``ldae.estimator.share_middle_block: false`` (the authors'
branch has its own middle block; our estimator is built that way here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock

from .autoencoder import build_autoencoder
from .gradient_estimator import GradientEstimator
from .ldm_unet import LDM_DEFAULTS, AdaGNResnetBlock, build_ldm_unet

__all__ = [
    "OfficialWeightsError",
    "OFFICIAL_LDM_NETWORK",
    "BRANCH_PREFIXES",
    "check_official_ldm_network",
    "autoencoder_state_dict_from_official",
    "autoencoder_state_dict_to_official",
    "ldm_state_dict_from_official",
    "ldm_state_dict_to_official",
    "estimator_state_dict_from_official",
    "estimator_state_dict_to_official",
]

StateDict = dict[str, torch.Tensor]

# ldm.network values without which the authors' weights compute a different function
OFFICIAL_LDM_NETWORK: dict[str, Any] = {"resample_axes": "last_two", "norm_eps": 1e-5}
# decoder.pth keys of the trainable branch (not part of the frozen LDM)
BRANCH_PREFIXES = ("label_emb.", "shift_middle_block.", "shift_output_blocks.", "shift_out.")

_SAME, _RES, _ATTN = "same", "res", "attn"
_RES_SUFFIXES = {  # authors' residual block -> our AdaGNResnetBlock
    "in_layers.0.": "norm1.",
    "in_layers.2.": "conv1.conv.",
    "emb_layers.1.": "time_emb_proj.",
    "emb_z_layers.1.": "cond_emb_proj.",
    "out_layers.0.": "norm2.",
    "out_layers.3.": "conv2.conv.",
    "skip_connection.": "skip_connection.conv.",
}
_RES_SUFFIXES_INV = {v: k for k, v in _RES_SUFFIXES.items()}
_QKV = ("attn.to_q.", "attn.to_k.", "attn.to_v.")
_QKV_ORIGIN = "to_q/to_k/to_v"  # how a joined qkv names its three sources


class OfficialWeightsError(ValueError):
    """A state dict does not match the layout expected from the configuration."""


@dataclass(frozen=True)
class _Block:
    theirs: str  # key prefix in the authors' layout (ends with ".")
    ours: str  # key prefix in ours
    kind: str  # _SAME | _RES | _ATTN
    heads: int = 1


# --------------------------------------------------------------------------------------------- configuration checks


def check_official_ldm_network(ldm_network: Mapping[str, Any] | None, source: str = "the authors' weights") -> None:
    """Raise unless ``ldm_network`` (section ``ldm.network``) computes the authors' function with their weights."""
    c = {**LDM_DEFAULTS, **{k: v for k, v in (ldm_network or {}).items() if k in LDM_DEFAULTS}}
    bad = [
        f"ldm.network.{k}: {c[k]!r} (needs {v!r})"
        for k, v in OFFICIAL_LDM_NETWORK.items()
        if (abs(float(c[k]) - v) > 1e-12 * v if isinstance(v, float) else c[k] != v)
    ]
    if bad:
        raise OfficialWeightsError(
            f"{source}: the configured LDM network differs from the authors' network: "
            + "; ".join(bad)
            + ". Set these values in config.yaml (their defaults) to use the authors' weights."
        )


# ------------------------------------------------------------------------------------------- meta-device networks


def _meta_state(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def _meta_ldm(ldm_network: Mapping[str, Any] | None) -> nn.Module:
    with torch.device("meta"):
        return build_ldm_unet(ldm_network)


def _meta_estimator(ldm_network: Mapping[str, Any] | None, y_dim: int) -> GradientEstimator:
    with torch.device("meta"):
        return GradientEstimator(build_ldm_unet(ldm_network), y_dim=int(y_dim), share_middle_block=False)


# ----------------------------------------------------------------------------------------------------- U-Net layout


def _is_resblock(m: nn.Module | None) -> bool:
    return isinstance(m, (AdaGNResnetBlock, DiffusionUNetResnetBlock))


def _attention_block(theirs: str, ours: str, attn_block: nn.Module) -> _Block:
    return _Block(theirs, ours, _ATTN, int(attn_block.attn.num_heads))


def _encoder_layout(unet: nn.Module, ours: str) -> list[_Block]:
    """time embedding, input conv and down path (the authors' ``input_blocks``)."""
    blocks = [
        _Block("time_embed.", f"{ours}time_embed.", _SAME),
        _Block("input_blocks.0.0.", f"{ours}conv_in.conv.", _SAME),
    ]
    k = 1
    for lvl, down in enumerate(unet.down_blocks):
        attns = getattr(down, "attentions", None)
        for r in range(len(down.resnets)):
            blocks.append(_Block(f"input_blocks.{k}.0.", f"{ours}down_blocks.{lvl}.resnets.{r}.", _RES))
            if attns:
                blocks.append(
                    _attention_block(f"input_blocks.{k}.1.", f"{ours}down_blocks.{lvl}.attentions.{r}.", attns[r])
                )
            k += 1
        if down.downsampler is not None:
            if _is_resblock(down.downsampler):
                blocks.append(_Block(f"input_blocks.{k}.0.", f"{ours}down_blocks.{lvl}.downsampler.", _RES))
            else:  # strided convolution (resblock_updown: false)
                blocks.append(_Block(f"input_blocks.{k}.0.op.", f"{ours}down_blocks.{lvl}.downsampler.op.conv.", _SAME))
            k += 1
    return blocks


def _decoder_layout(
    middle: nn.Module, up_blocks: nn.ModuleList, theirs: tuple[str, str, str], ours: tuple[str, str, str]
) -> list[_Block]:
    """middle block, up path and output layer; ``theirs``/``ours``: the three prefixes (middle, up, out)."""
    t_mid, t_up, t_out = theirs
    o_mid, o_up, o_out = ours
    blocks = [
        _Block(f"{t_mid}0.", f"{o_mid}resnet_1.", _RES),
        _attention_block(f"{t_mid}1.", f"{o_mid}attention.", middle.attention),
        _Block(f"{t_mid}2.", f"{o_mid}resnet_2.", _RES),
    ]
    k = 0
    for u, up in enumerate(up_blocks):
        attns = getattr(up, "attentions", None)
        n = len(up.resnets)
        for r in range(n):
            blocks.append(_Block(f"{t_up}{k}.0.", f"{o_up}{u}.resnets.{r}.", _RES))
            j = 1
            if attns:
                blocks.append(_attention_block(f"{t_up}{k}.1.", f"{o_up}{u}.attentions.{r}.", attns[r]))
                j = 2
            if r == n - 1 and up.upsampler is not None:
                if _is_resblock(up.upsampler):
                    blocks.append(_Block(f"{t_up}{k}.{j}.", f"{o_up}{u}.upsampler.", _RES))
                else:  # nearest upsampling + convolution (resblock_updown: false)
                    blocks.append(_Block(f"{t_up}{k}.{j}.conv.", f"{o_up}{u}.upsampler.postconv.conv.", _SAME))
            k += 1
    blocks += [_Block(f"{t_out}0.", f"{o_out}0.", _SAME), _Block(f"{t_out}2.", f"{o_out}2.conv.", _SAME)]
    return blocks


def _ldm_layout(unet: nn.Module, ours: str = "") -> list[_Block]:
    return _encoder_layout(unet, ours) + _decoder_layout(
        unet.middle_block,
        unet.up_blocks,
        ("middle_block.", "output_blocks.", "out."),
        (f"{ours}middle_block.", f"{ours}up_blocks.", f"{ours}out."),
    )


def _estimator_layout(est: GradientEstimator) -> list[_Block]:
    branch = est.branch
    return (
        _ldm_layout(est.ldm, "ldm.")
        + [_Block("label_emb.", "y_proj.", _SAME)]
        + _decoder_layout(
            branch["middle_block"],
            branch["up_blocks"],
            ("shift_middle_block.", "shift_output_blocks.", "shift_out."),
            ("branch.middle_block.", "branch.up_blocks.", "branch.out."),
        )
    )


# ------------------------------------------------------------------------------------------- per-block conversions


def _qkv_split(w: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[3C, C(, 1)]`` or ``[3C]`` in guided-diffusion's legacy per-head order -> q, k, v ``[C, C]`` / ``[C]``."""
    c = w.shape[0] // 3
    rest = w.shape[1:]
    parts = w.reshape(heads, 3, c // heads, *rest)
    return tuple(parts[:, i].reshape(c, *rest).contiguous() for i in range(3))  # type: ignore[return-value]


def _qkv_join(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    c, rest = q.shape[0], q.shape[1:]
    parts = [x.reshape(heads, 1, c // heads, *rest) for x in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(3 * c, *rest)


def _attn_to_ours(
    block: _Block, sd: StateDict, problems: list[str], key_of: Callable[[str], str], origin: dict[str, str]
) -> StateDict:
    out: StateDict = {}
    for suffix, t in sd.items():
        param = suffix.rsplit(".", 1)[-1]
        if suffix.startswith("norm."):
            out[suffix], origin[suffix] = t, suffix
        elif suffix in ("qkv.weight", "qkv.bias"):
            ok = t.ndim in (1, 3) and t.shape[0] % (3 * block.heads) == 0 and (t.ndim == 1 or t.shape[-1] == 1)
            if not ok:
                problems.append(f"{key_of(suffix)}: shape {tuple(t.shape)} is not a qkv Conv1d [3C, C, 1] / [3C]")
                continue
            t = t[..., 0] if t.ndim == 3 else t
            for name, part in zip(_QKV, _qkv_split(t, block.heads)):
                out[f"{name}{param}"], origin[f"{name}{param}"] = part, suffix
        elif suffix in ("proj_out.weight", "proj_out.bias"):
            if suffix == "proj_out.weight" and (t.ndim != 3 or t.shape[-1] != 1):
                problems.append(f"{key_of(suffix)}: shape {tuple(t.shape)} is not a Conv1d [C, C, 1]")
                continue
            out[f"attn.out_proj.{param}"] = t[..., 0] if t.ndim == 3 else t
            origin[f"attn.out_proj.{param}"] = suffix
        else:
            problems.append(f"{key_of(suffix)}: not a key of an attention block")
    return out


def _attn_to_theirs(
    block: _Block, sd: StateDict, problems: list[str], key_of: Callable[[str], str], origin: dict[str, str]
) -> StateDict:
    out: StateDict = {}
    for param in ("weight", "bias"):
        qkv = [sd.pop(f"{name}{param}", None) for name in _QKV]
        if all(x is not None for x in qkv):
            t = _qkv_join(*qkv, block.heads)  # type: ignore[misc]
            out[f"qkv.{param}"] = t[..., None] if param == "weight" else t
            origin[f"qkv.{param}"] = f"attn.{_QKV_ORIGIN}.{param}"
        elif any(x is not None for x in qkv):
            problems.append(f"{key_of('attn.to_q.' + param)}: q, k and v {param}s must all be present")
    for suffix, t in sd.items():
        if suffix.startswith("norm."):
            out[suffix], origin[suffix] = t, suffix
        elif suffix in ("attn.out_proj.weight", "attn.out_proj.bias"):
            param = suffix.rsplit(".", 1)[-1]
            out[f"proj_out.{param}"] = t[..., None] if param == "weight" else t
            origin[f"proj_out.{param}"] = suffix
        else:
            problems.append(f"{key_of(suffix)}: not a key of an attention block")
    return out


def _rename(
    sd: StateDict,
    table: Mapping[str, str],
    problems: list[str],
    key_of: Callable[[str], str],
    origin: dict[str, str],
    what: str,
) -> StateDict:
    out: StateDict = {}
    for suffix, t in sd.items():
        prefix = next((p for p in table if suffix.startswith(p)), None)
        if prefix is None:
            problems.append(f"{key_of(suffix)}: not a key of {what}")
        else:
            new = table[prefix] + suffix[len(prefix) :]
            out[new], origin[new] = t, suffix
    return out


def _block_to_ours(block: _Block, sd: StateDict, problems: list[str], key_of, origin: dict[str, str]) -> StateDict:
    if block.kind == _RES:
        return _rename(sd, _RES_SUFFIXES, problems, key_of, origin, "a residual block")
    if block.kind == _ATTN:
        return _attn_to_ours(block, sd, problems, key_of, origin)
    origin.update({k: k for k in sd})
    return dict(sd)


def _block_to_theirs(block: _Block, sd: StateDict, problems: list[str], key_of, origin: dict[str, str]) -> StateDict:
    if block.kind == _RES:
        return _rename(sd, _RES_SUFFIXES_INV, problems, key_of, origin, "a residual block")
    if block.kind == _ATTN:
        return _attn_to_theirs(block, dict(sd), problems, key_of, origin)
    origin.update({k: k for k in sd})
    return dict(sd)


# ------------------------------------------------------------------------------------------------ generic machinery


def _group(
    sd: Mapping[str, torch.Tensor], prefixes: Mapping[str, _Block], problems: list[str], source: str
) -> dict[_Block, StateDict]:
    """Source keys grouped by the block whose prefix they start with (longest prefix wins)."""
    groups: dict[_Block, StateDict] = {}
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor):
            problems.append(f"{source}: {key}: not a tensor ({type(t).__name__})")
            continue
        cuts = [i + 1 for i, ch in enumerate(key) if ch == "."]
        prefix = next((key[:i] for i in reversed(cuts) if key[:i] in prefixes), None)
        if prefix is None:
            problems.append(f"{source}: {key}: no counterpart in the network of the config (unused)")
            continue
        groups.setdefault(prefixes[prefix], {})[key[len(prefix) :]] = t
    return groups


def _compare(
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    problems: list[str],
    where: str,
    origin: Mapping[str, str] | None = None,
    wanted: Mapping[str, str] | None = None,
) -> None:
    """Missing / unused keys and shape mismatches of ``got`` against ``expected``; ``origin``: the source key of each
    key of ``got``; ``wanted``: the source key each expected key should come from."""

    def name(k: str) -> str:
        return f"{origin[k]} (-> {k})" if origin and k in origin else k

    for k in sorted(set(expected) - set(got)):
        src = f"{wanted[k]} (-> {k})" if wanted and k in wanted else k
        problems.append(f"{where}: {src}: missing (expected shape {tuple(expected[k])})")
    for k in sorted(set(got) - set(expected)):
        problems.append(f"{where}: {name(k)}: no counterpart in the network of the config (unused)")
    for k in sorted(set(got) & set(expected)):
        if tuple(got[k].shape) != tuple(expected[k]):
            problems.append(
                f"{where}: {name(k)}: shape {tuple(got[k].shape)}, the network of the config needs {tuple(expected[k])}"
            )


def _raise(problems: list[str], what: str, hint: str) -> None:
    if problems:
        more = f"\n  ... ({len(problems)} problems in all)" if len(problems) > 12 else ""
        shown = "\n  ".join(problems[:12]) + more
        raise OfficialWeightsError(f"cannot convert {what}:\n  {shown}\n{hint}")


def _convert(
    sd: Mapping[str, torch.Tensor], layout: list[_Block], to_ours: bool
) -> tuple[StateDict, dict[str, str], list[str]]:
    """Apply the layout (no checks against the expected keys): the converted dict, the source key of each converted
    key, and the problems met."""
    problems: list[str] = []
    prefixes = {(b.theirs if to_ours else b.ours): b for b in layout}
    out: StateDict = {}
    origin: dict[str, str] = {}
    for block, part in _group(sd, prefixes, problems, "source").items():
        src_prefix = block.theirs if to_ours else block.ours
        dst_prefix = block.ours if to_ours else block.theirs

        def key_of(suffix: str, _p: str = src_prefix) -> str:
            return f"source: {_p}{suffix}"

        conv = _block_to_ours if to_ours else _block_to_theirs
        block_origin: dict[str, str] = {}
        for suffix, t in conv(block, part, problems, key_of, block_origin).items():
            out[dst_prefix + suffix] = t
            origin[dst_prefix + suffix] = src_prefix + block_origin[suffix]
    return out, origin, problems


def _from_official(
    sd: Mapping[str, torch.Tensor],
    layout: list[_Block],
    expected: dict[str, torch.Size],
    source: str,
    what: str,
    hint: str,
) -> StateDict:
    out, origin, problems = _convert(sd, layout, to_ours=True)
    problems = [p.replace("source:", f"{source}:", 1) for p in problems]
    wanted: dict[str, str] = {}
    if set(expected) - set(out):  # name the authors' key of each missing tensor
        meta = {k: torch.empty(s, device="meta") for k, s in expected.items()}
        for theirs, ours in _convert(meta, layout, to_ours=False)[1].items():
            for name in ("to_q", "to_k", "to_v") if _QKV_ORIGIN in ours else ("",):
                wanted[ours.replace(_QKV_ORIGIN, name)] = theirs
    _compare(out, expected, problems, source, origin, wanted)
    _raise(problems, f"{source} into our {what}", hint)
    return out


def _to_official(
    sd: Mapping[str, torch.Tensor], layout: list[_Block], own: dict[str, torch.Size], what: str, hint: str
) -> StateDict:
    where = f"our {what} state dict"
    problems: list[str] = []
    _compare(dict(sd), own, problems, where)
    _raise(problems, where, hint)
    meta = {k: torch.empty(s, device="meta") for k, s in own.items()}
    expected = {k: v.shape for k, v in _convert(meta, layout, to_ours=False)[0].items()}
    out, origin, problems = _convert(sd, layout, to_ours=False)
    problems = [p.replace("source:", f"{where}:", 1) for p in problems]
    _compare(out, expected, problems, where, origin)
    _raise(problems, where, hint)
    return out


# --------------------------------------------------------------------------------------------------- autoencoder

_ATTN_KEY = re.compile(r"^(?P<block>.*)\.attn\.(?P<name>to_q|to_k|to_v|out_proj)\.(?P<param>weight|bias)$")


def _ae_official_key(ours: str) -> str:
    """Our ``AutoencoderKL`` key -> the MONAI-Generative one (the renames of ``AutoencoderKL.load_old_state_dict``)."""
    m = _ATTN_KEY.match(ours)
    if m:
        name = "proj_attn" if m["name"] == "out_proj" else m["name"]
        return f"{m['block']}.{name}.{m['param']}"
    return ours.replace("postconv", "conv")


def _ae_key_map(ae_network: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, torch.Size]]:
    with torch.device("meta"):
        own = _meta_state(build_autoencoder(ae_network))
    return {_ae_official_key(k): k for k in own}, own


_AE_HINT = (
    "The network comes from config section autoencoder.network (the authors' autoencoderkl.pth needs the "
    "paper's values: channels [64, 128, 128, 128], 2 residual blocks, no attention, 3 latent channels)."
)


def autoencoder_state_dict_from_official(
    sd: Mapping[str, torch.Tensor], ae_network: Mapping[str, Any] | None, source: str = "autoencoderkl.pth"
) -> StateDict:
    """The authors' ``autoencoderkl.pth`` (MONAI-Generative layout) -> our ``AutoencoderKL`` state dict.

    ``ae_network``: config section ``autoencoder.network``. A state dict already in our layout is accepted too.
    """
    theirs_to_ours, own = _ae_key_map(ae_network)
    problems: list[str] = []
    out: StateDict = {}
    for key, t in sd.items():
        ours = theirs_to_ours.get(key, key if key in own else None)
        if ours is None:
            problems.append(f"{source}: {key}: no counterpart in the network of the config (unused)")
        elif ours in out:
            problems.append(f"{source}: {key}: {ours} given twice (old and new layout mixed)")
        else:
            out[ours] = t
    ours_to_theirs = {v: k for k, v in theirs_to_ours.items()}
    _compare(out, own, problems, source, {k: ours_to_theirs[k] for k in out if k in ours_to_theirs}, ours_to_theirs)
    _raise(problems, f"{source} into our AutoencoderKL", _AE_HINT)
    return out


def autoencoder_state_dict_to_official(
    sd: Mapping[str, torch.Tensor], ae_network: Mapping[str, Any] | None
) -> StateDict:
    """Our ``AutoencoderKL`` state dict -> the authors' (MONAI-Generative) layout of ``autoencoderkl.pth``."""
    theirs_to_ours, own = _ae_key_map(ae_network)
    problems: list[str] = []
    _compare(dict(sd), own, problems, "our AutoencoderKL state dict")
    _raise(problems, "our AutoencoderKL state dict", _AE_HINT)
    return {theirs: sd[ours] for theirs, ours in theirs_to_ours.items()}


# ----------------------------------------------------------------------------------------------------------- LDM

_LDM_HINT = (
    "The network comes from config section ldm.network (+ latent_channels); the authors' decoder.pth needs "
    "the paper's values (channels [256, 512, 768], 2 residual blocks, attention [false, true, true], 1 head, "
    "time_conditioning scale_shift, resblock_updown true, 3 latent channels)."
)


def ldm_state_dict_from_official(
    sd: Mapping[str, torch.Tensor], ldm_network: Mapping[str, Any] | None, source: str = "decoder.pth"
) -> StateDict:
    """The frozen stage-2 LDM inside the authors' ``decoder.pth`` -> our LDM U-Net state dict.

    ``sd``: the whole ``decoder.pth`` (its trainable-branch keys, :data:`BRANCH_PREFIXES`, are set aside) or the
    authors' bare ``UNet`` state dict. ``ldm_network``: config section ``ldm.network`` (+ ``latent_channels``).
    """
    check_official_ldm_network(ldm_network, source)
    unet = _meta_ldm(ldm_network)
    frozen = {k: v for k, v in sd.items() if not k.startswith(BRANCH_PREFIXES)}
    return _from_official(frozen, _ldm_layout(unet), _meta_state(unet), source, "LDM U-Net", _LDM_HINT)


def ldm_state_dict_to_official(sd: Mapping[str, torch.Tensor], ldm_network: Mapping[str, Any] | None) -> StateDict:
    """Our LDM U-Net state dict -> the authors' ``UNet`` layout (the frozen part of ``decoder.pth``)."""
    check_official_ldm_network(ldm_network, "our LDM U-Net")
    unet = _meta_ldm(ldm_network)
    return _to_official(sd, _ldm_layout(unet), _meta_state(unet), "LDM U-Net", _LDM_HINT)


# ----------------------------------------------------------------------------------------------------- estimator

_EST_HINT = _LDM_HINT + " y_dim is ldae.encoder.y_dim (768 for the authors' weights)."


def estimator_state_dict_from_official(
    sd: Mapping[str, torch.Tensor], ldm_network: Mapping[str, Any] | None, y_dim: int = 768, source: str = "decoder.pth"
) -> StateDict:
    """The authors' whole ``decoder.pth`` -> our :class:`GradientEstimator` state dict (frozen LDM under ``ldm.``).

    Our estimator must have its own middle block (``ldae.estimator.share_middle_block: false``), as the authors'.
    """
    check_official_ldm_network(ldm_network, source)
    est = _meta_estimator(ldm_network, y_dim)
    return _from_official(sd, _estimator_layout(est), _meta_state(est), source, "GradientEstimator", _EST_HINT)


def estimator_state_dict_to_official(
    sd: Mapping[str, torch.Tensor], ldm_network: Mapping[str, Any] | None, y_dim: int = 768
) -> StateDict:
    """Our :class:`GradientEstimator` state dict (with ``ldm.*``) -> the authors' ``decoder.pth`` layout."""
    check_official_ldm_network(ldm_network, "our GradientEstimator")
    est = _meta_estimator(ldm_network, y_dim)
    return _to_official(sd, _estimator_layout(est), _meta_state(est), "GradientEstimator", _EST_HINT)
