"""The authors' released weights <-> our modules (ldae.models.official): complete key maps at the paper size (from the
key/shape list of the released files), exact round trips at a tiny size, and block-level checks against the
computation the authors' key names stand for (guided-diffusion residual and attention blocks)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

torch.set_num_threads(1)

from ldae.models import GradientEstimator, build_autoencoder, build_ldm_unet, count_parameters  # noqa: E402
from ldae.models.official import (  # noqa: E402
    BRANCH_PREFIXES,
    OfficialWeightsError,
    autoencoder_state_dict_from_official,
    autoencoder_state_dict_to_official,
    check_official_ldm_network,
    estimator_state_dict_from_official,
    estimator_state_dict_to_official,
    ldm_state_dict_from_official,
    ldm_state_dict_to_official,
)
from ldae.models.semantic_encoder import resolve_y_dim  # noqa: E402

from helpers import tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS_JSON = ROOT.parent / "shared" / "official-weights-keys.json"  # CI clones the repo with shared/ beside it
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
PAPER_LDM = {**CONFIG["ldm"]["network"], "latent_channels": CONFIG["autoencoder"]["network"]["latent_channels"]}
PAPER_Y_DIM = resolve_y_dim(CONFIG["ldae"]["encoder"])  # null: the backbone's feature size (768)
PAPER_AE = CONFIG["autoencoder"]["network"]

# the paper's structure (3 levels, 2 residual blocks, attention at the two deeper levels) at a tiny width
PAPER_STRUCTURE = {"num_res_blocks": 2, "attention_levels": [False, True, True]}
TINY_LDM = {**tiny_models.TINY_LDM, **PAPER_STRUCTURE, "channels": [16, 32, 48], "dropout": 0.1}
TINY_Y = 12
TINY_AE = {**tiny_models.TINY_AE, "attention_levels": [False, True]}
TINY_AE.update(with_encoder_nonlocal_attn=True, with_decoder_nonlocal_attn=True)


@pytest.fixture(scope="module")
def official_layouts() -> dict:
    if not KEYS_JSON.is_file():
        pytest.skip(
            f"{KEYS_JSON} is absent: the key list of the authors' released weights lives in shared/ beside "
            "the repository (CI clones it there)"
        )
    return json.loads(KEYS_JSON.read_text())


def _meta_tensors(layout: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


def _shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _frozen_part(layouts: dict) -> dict[str, list[int]]:
    (name,) = [k for k in layouts if k.startswith("decoder.pth frozen part")]
    return layouts[name]


def _perturb_all_(module: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Add noise to EVERY parameter (zero-initialised convs, projections and biases included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


# -------------------------------------------------------------------------------- (a) paper-size layouts, complete


def test_decoder_pth_maps_completely_onto_our_ldm(official_layouts):
    decoder = _meta_tensors(official_layouts["decoder.pth"])
    with torch.device("meta"):
        unet = build_ldm_unet(PAPER_LDM)
    own = _shapes(unet.state_dict())
    for source in (decoder, _meta_tensors(_frozen_part(official_layouts))):
        ours = ldm_state_dict_from_official(source, PAPER_LDM, source="decoder.pth")
        assert _shapes(ours) == own  # none of ours missing, shapes equal
    assert sum(v.numel() for v in ours.values()) == 486_927_363
    # every frozen tensor used: the inverse gives exactly the authors' frozen layout back
    back = ldm_state_dict_to_official(ours, PAPER_LDM)
    assert _shapes(back) == {k: tuple(v) for k, v in _frozen_part(official_layouts).items()}
    assert set(official_layouts["decoder.pth"]) - set(back) == {
        k for k in official_layouts["decoder.pth"] if k.startswith(BRANCH_PREFIXES)
    }


def test_decoder_pth_maps_completely_onto_our_estimator(official_layouts):
    decoder = _meta_tensors(official_layouts["decoder.pth"])
    ours = estimator_state_dict_from_official(decoder, PAPER_LDM, y_dim=PAPER_Y_DIM, source="decoder.pth")
    with torch.device("meta"):
        est = GradientEstimator(build_ldm_unet(PAPER_LDM), y_dim=PAPER_Y_DIM)
    assert _shapes(ours) == _shapes(est.state_dict())
    assert len(decoder) == 530 and len(ours) == 602
    assert sum(v.numel() for k, v in ours.items() if not k.startswith("ldm.")) == 378_411_779
    back = estimator_state_dict_to_official(ours, PAPER_LDM, y_dim=PAPER_Y_DIM)
    assert _shapes(back) == {k: tuple(v) for k, v in official_layouts["decoder.pth"].items()}


def test_tiny_export_has_the_released_key_layout(official_layouts):
    """Same structure at a tiny width: our export's keys are exactly the keys of the released decoder.pth."""
    est = GradientEstimator(build_ldm_unet(TINY_LDM), y_dim=TINY_Y)
    exported = estimator_state_dict_to_official(est.state_dict(), TINY_LDM, y_dim=TINY_Y)
    assert set(exported) == set(official_layouts["decoder.pth"])
    assert all(len(exported[k].shape) == len(v) for k, v in official_layouts["decoder.pth"].items())


def test_autoencoderkl_pth_layout(official_layouts):
    if "autoencoderkl.pth" not in official_layouts:
        pytest.skip(f"{KEYS_JSON.name} lists no keys of autoencoderkl.pth (only {sorted(official_layouts)})")
    layout = official_layouts["autoencoderkl.pth"]
    ours = autoencoder_state_dict_from_official(_meta_tensors(layout), PAPER_AE)
    with torch.device("meta"):
        assert _shapes(ours) == _shapes(build_autoencoder(PAPER_AE).state_dict())
    assert _shapes(autoencoder_state_dict_to_official(ours, PAPER_AE)) == {k: tuple(v) for k, v in layout.items()}


def test_paper_autoencoder_old_layout_renames_only_the_upsampling_convs():
    """The authors' autoencoder has no attention: MONAI-Generative differs only in decoder.blocks.{3,6,9}.conv."""
    with torch.device("meta"):
        own = build_autoencoder(PAPER_AE).state_dict()
    old = autoencoder_state_dict_to_official(own, PAPER_AE)
    assert len(old) == len(own) and count_parameters(build_autoencoder(PAPER_AE)) == sum(
        v.numel() for v in old.values()
    )
    renamed = sorted(set(old) - set(own))
    assert renamed == sorted(f"decoder.blocks.{b}.conv.conv.{p}" for b in (3, 6, 9) for p in ("weight", "bias"))
    assert _shapes(autoencoder_state_dict_from_official(old, PAPER_AE)) == _shapes(own)


# ------------------------------------------------------------------------------------------- (b) tiny round trips


def test_ldm_round_trip_gives_identical_eps():
    torch.manual_seed(0)
    unet = _perturb_all_(build_ldm_unet(TINY_LDM)).eval()
    theirs = ldm_state_dict_to_official(unet.state_dict(), TINY_LDM)
    assert theirs["input_blocks.4.1.qkv.weight"].shape == (96, 32, 1)  # Conv1d [3C, C, 1]
    assert theirs["input_blocks.4.1.proj_out.weight"].shape == (32, 32, 1)
    torch.manual_seed(1)
    fresh = build_ldm_unet(TINY_LDM).eval()
    fresh.load_state_dict(ldm_state_dict_from_official(theirs, TINY_LDM, source="tiny.pth"), strict=True)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([10, 800])
    with torch.no_grad():
        eps = unet(x, t)
        assert torch.equal(fresh(x, t), eps) and eps.abs().max() > 0


def test_estimator_round_trip_gives_identical_eps_and_g():
    torch.manual_seed(0)
    est = _perturb_all_(GradientEstimator(build_ldm_unet(TINY_LDM), y_dim=TINY_Y)).eval()
    theirs = estimator_state_dict_to_official(est.state_dict(), TINY_LDM, y_dim=TINY_Y)
    assert {"label_emb.weight", "shift_out.2.weight", "shift_middle_block.0.emb_z_layers.1.weight"} <= set(theirs)
    torch.manual_seed(1)
    fresh = GradientEstimator(build_ldm_unet(TINY_LDM), y_dim=TINY_Y).eval()
    fresh.load_state_dict(estimator_state_dict_from_official(theirs, TINY_LDM, y_dim=TINY_Y), strict=True)
    x, t, y = torch.randn(2, 3, 4, 8, 8), torch.tensor([10, 800]), torch.randn(2, TINY_Y)
    with torch.no_grad():
        g, eps = est(x, t, y, return_eps=True)
        g2, eps2 = fresh(x, t, y, return_eps=True)
    assert torch.equal(g2, g) and torch.equal(eps2, eps) and g.abs().max() > 0
    # the frozen part of the estimator's file is the LDM
    unet = build_ldm_unet(TINY_LDM).eval()
    unet.load_state_dict(ldm_state_dict_from_official(theirs, TINY_LDM, source="tiny decoder.pth"), strict=True)
    with torch.no_grad():
        assert torch.equal(unet(x, t), eps)


def test_autoencoder_round_trip_agrees_with_monai_load_old_state_dict():
    torch.manual_seed(0)
    ae = _perturb_all_(build_autoencoder(TINY_AE))
    own = ae.state_dict()
    old = autoencoder_state_dict_to_official(own, TINY_AE)
    assert {"encoder.blocks.4.to_q.weight", "encoder.blocks.4.proj_attn.weight"} <= set(old)  # MONAI-Generative names
    fresh = build_autoencoder(TINY_AE)
    with contextlib.redirect_stdout(io.StringIO()):
        fresh.load_old_state_dict(dict(old))  # MONAI's own reader of the old layout
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in own.items())
    back = autoencoder_state_dict_from_official(old, TINY_AE)
    assert set(back) == set(own) and all(torch.equal(back[k], v) for k, v in own.items())
    assert set(autoencoder_state_dict_from_official(own, TINY_AE)) == set(own)  # our own layout passes through


# ------------------------------------------------------- block-level: what the authors' key names compute (eval mode)


def _ref_resblock(x, emb, sd, p, groups, eps, resample=None, z_emb=None):
    """guided-diffusion ResBlock with scale-shift norm: in_layers (GN, SiLU, conv), emb_layers (SiLU, Linear),
    out_layers (GN, SiLU, dropout, conv), skip_connection; ResBlockShift adds (1 + z_s) h + z_b by emb_z_layers."""
    h = F.silu(F.group_norm(x, groups, sd[p + "in_layers.0.weight"], sd[p + "in_layers.0.bias"], eps))
    if resample is not None:
        h, x = resample(h), resample(x)
    h = F.conv3d(h, sd[p + "in_layers.2.weight"], sd[p + "in_layers.2.bias"], padding=1)
    scale, shift = F.linear(F.silu(emb), sd[p + "emb_layers.1.weight"], sd[p + "emb_layers.1.bias"]).chunk(2, 1)
    h = F.group_norm(h, groups, sd[p + "out_layers.0.weight"], sd[p + "out_layers.0.bias"], eps)
    h = h * (1 + scale[..., None, None, None]) + shift[..., None, None, None]
    if z_emb is not None:
        zs, zb = F.linear(F.silu(z_emb), sd[p + "emb_z_layers.1.weight"], sd[p + "emb_z_layers.1.bias"]).chunk(2, 1)
        h = (1 + zs[..., None, None, None]) * h + zb[..., None, None, None]
    h = F.conv3d(F.silu(h), sd[p + "out_layers.3.weight"], sd[p + "out_layers.3.bias"], padding=1)
    if p + "skip_connection.weight" in sd:
        x = F.conv3d(x, sd[p + "skip_connection.weight"], sd[p + "skip_connection.bias"])
    return x + h


def _ref_attention(x, sd, p, groups, eps, heads):
    """guided-diffusion AttentionBlock (legacy order): qkv Conv1d -> per head [q; k; v] rows, softmax(q k / sqrt d),
    proj_out Conv1d, residual."""
    b, c = x.shape[:2]
    h = F.group_norm(x, groups, sd[p + "norm.weight"], sd[p + "norm.bias"], eps).reshape(b, c, -1)
    qkv = F.conv1d(h, sd[p + "qkv.weight"], sd[p + "qkv.bias"])
    q, k, v = qkv.reshape(b * heads, 3 * c // heads, -1).split(c // heads, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(c // heads), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
    return x + F.conv1d(a, sd[p + "proj_out.weight"], sd[p + "proj_out.bias"]).reshape(x.shape)


@pytest.mark.parametrize("heads", [1, 2])
def test_exported_blocks_compute_the_authors_blocks(heads):
    cfg = {**TINY_LDM, "num_heads": heads, "dropout": 0.0}
    torch.manual_seed(0)
    sd = estimator_state_dict_to_official(
        _perturb_all_(GradientEstimator(build_ldm_unet(cfg), y_dim=TINY_Y)).state_dict(), cfg, y_dim=TINY_Y
    )
    est = GradientEstimator(build_ldm_unet(cfg), y_dim=TINY_Y).eval()  # the authors' layout imported
    est.load_state_dict(estimator_state_dict_from_official(sd, cfg, y_dim=TINY_Y, source="tiny"), strict=True)
    unet = est.ldm
    g, eps_ = 8, 1e-5
    emb = est.ldm.time_embed(torch.randn(2, 16))  # any (B, 64) embedding
    z_emb = torch.randn(2, 64)
    x16, x32, x48 = torch.randn(2, 16, 4, 8, 6), torch.randn(2, 32, 4, 4, 6), torch.randn(2, 48, 4, 2, 3)

    def pool(v):
        return F.avg_pool3d(v, kernel_size=(1, 2, 2))  # the authors' downsampling

    def up(v):
        return F.interpolate(v, size=(v.shape[2], v.shape[3] * 2, v.shape[4] * 2), mode="nearest")

    with torch.no_grad():
        pairs = [
            (unet.down_blocks[0].resnets[0](x16, emb), _ref_resblock(x16, emb, sd, "input_blocks.1.0.", g, eps_)),
            (
                unet.down_blocks[0].downsampler(x16, emb),
                _ref_resblock(x16, emb, sd, "input_blocks.3.0.", g, eps_, resample=pool),
            ),
            (unet.down_blocks[1].resnets[0](x16, emb), _ref_resblock(x16, emb, sd, "input_blocks.4.0.", g, eps_)),
            (unet.down_blocks[1].attentions[0](x32), _ref_attention(x32, sd, "input_blocks.4.1.", g, eps_, heads)),
            (unet.middle_block.attention(x48), _ref_attention(x48, sd, "middle_block.1.", g, eps_, heads)),
            (unet.middle_block.resnet_2(x48, emb), _ref_resblock(x48, emb, sd, "middle_block.2.", g, eps_)),
            (
                unet.up_blocks[1].upsampler(x32, emb),
                _ref_resblock(x32, emb, sd, "output_blocks.5.2.", g, eps_, resample=up),
            ),
            (
                est.branch["up_blocks"][1].upsampler(x32, torch.cat([emb, z_emb], 1)),
                _ref_resblock(x32, emb, sd, "shift_output_blocks.5.2.", g, eps_, resample=up, z_emb=z_emb),
            ),
            (
                est.branch["middle_block"].attention(x48),
                _ref_attention(x48, sd, "shift_middle_block.1.", g, eps_, heads),
            ),
        ]
        assert unet.down_blocks[0].downsampler(x16, emb).shape == (2, 16, 4, 4, 3)  # last two axes only
        assert unet.up_blocks[1].upsampler(x32, emb).shape == (2, 32, 4, 8, 12)
        out = unet.out(x16)
        ref_out = F.conv3d(
            F.silu(F.group_norm(x16, g, sd["out.0.weight"], sd["out.0.bias"], eps_)),
            sd["out.2.weight"],
            sd["out.2.bias"],
            padding=1,
        )
        pairs.append((out, ref_out))
        pairs.append(
            (est.y_proj(z_emb[:, :TINY_Y]), F.linear(z_emb[:, :TINY_Y], sd["label_emb.weight"], sd["label_emb.bias"]))
        )
    for i, (ours, ref) in enumerate(pairs):
        assert ours.shape == ref.shape, i
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), (i, (ours - ref).abs().max().item())


# ----------------------------------------------------------------------------------------------------------- errors


def test_strict_errors_name_the_key_and_the_file():
    torch.manual_seed(0)
    theirs = estimator_state_dict_to_official(
        GradientEstimator(build_ldm_unet(TINY_LDM), y_dim=TINY_Y).state_dict(), TINY_LDM, y_dim=TINY_Y
    )
    extra = {**theirs, "label_emb.extra": torch.zeros(3)}
    with pytest.raises(OfficialWeightsError, match=r"(?s)my_decoder\.pth.*label_emb\.extra.*unused"):
        estimator_state_dict_from_official(extra, TINY_LDM, y_dim=TINY_Y, source="my_decoder.pth")
    missing = {k: v for k, v in theirs.items() if k != "input_blocks.4.1.qkv.bias"}
    with pytest.raises(OfficialWeightsError, match=r"(?s)my_decoder\.pth: input_blocks\.4\.1\.qkv\.bias .*missing"):
        estimator_state_dict_from_official(missing, TINY_LDM, y_dim=TINY_Y, source="my_decoder.pth")
    with pytest.raises(OfficialWeightsError, match=r"(?s)d\.pth: input_blocks\.0\.0\.weight .*shape"):
        ldm_state_dict_from_official(theirs, {**TINY_LDM, "latent_channels": 4}, source="d.pth")
    with pytest.raises(OfficialWeightsError, match=r"(?s)d\.pth.*label_emb\.weight .*shape"):
        estimator_state_dict_from_official(theirs, TINY_LDM, y_dim=TINY_Y + 1, source="d.pth")
    bad_qkv = {**theirs, "input_blocks.4.1.qkv.weight": theirs["input_blocks.4.1.qkv.weight"][..., 0]}
    with pytest.raises(OfficialWeightsError, match=r"d\.pth: input_blocks\.4\.1\.qkv\.weight: shape \(96, 32\)"):
        ldm_state_dict_from_official(bad_qkv, TINY_LDM, source="d.pth")
    with pytest.raises(OfficialWeightsError, match="our GradientEstimator state dict: ldm.conv_in"):
        sd = GradientEstimator(build_ldm_unet(TINY_LDM), y_dim=TINY_Y).state_dict()
        sd.pop("ldm.conv_in.conv.weight")
        estimator_state_dict_to_official(sd, TINY_LDM, y_dim=TINY_Y)
    ae_old = autoencoder_state_dict_to_official(build_autoencoder(TINY_AE).state_dict(), TINY_AE)
    ae_old.pop("encoder.blocks.4.proj_attn.bias")
    with pytest.raises(OfficialWeightsError, match=r"ae\.pth: encoder\.blocks\.4\.proj_attn\.bias .*missing"):
        autoencoder_state_dict_from_official(ae_old, TINY_AE, source="ae.pth")


def test_official_weights_need_the_authors_resampling_and_norm_eps():
    check_official_ldm_network({})  # the defaults are the authors'
    check_official_ldm_network(PAPER_LDM)  # and config.yaml's
    with pytest.raises(OfficialWeightsError, match="ldm.network.resample_axes: 'all'"):
        ldm_state_dict_from_official({}, {**TINY_LDM, "resample_axes": "all"}, source="decoder.pth")
    with pytest.raises(OfficialWeightsError, match="ldm.network.norm_eps: 1e-06"):
        estimator_state_dict_to_official({}, {**TINY_LDM, "norm_eps": 1e-6})
