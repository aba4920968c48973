"""The authors' semantic-encoder head (the default) and the mapping of their released encoder.pth and probe."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

torch.set_num_threads(1)

from ldae.evaluation.probe_file import load_probe, probe_state, save_probe, write_official_probe  # noqa: E402
from ldae.models import count_parameters  # noqa: E402
from ldae.models.io import load_official_encoder  # noqa: E402
from ldae.models.official_encoder import (  # noqa: E402
    OFFICIAL_ENCODER_CONFIG,
    OfficialWeightsError,
    encoder_from_official,
    encoder_to_official,
    official_encoder_key_map,
    probe_from_official,
)
from ldae.models.semantic_encoder import (  # noqa: E402
    SemanticEncoder,
    resolve_encoder_config,
    resolve_y_dim,
    sinusoidal_positions,
)

# ../shared/ beside the repo root (as CI clones it); LDAE_OFFICIAL_KEYS overrides (a git worktree elsewhere)
KEYS_JSON = Path(
    os.environ.get("LDAE_OFFICIAL_KEYS")
    or Path(__file__).resolve().parents[1].parent / "shared" / "official-weights-keys.json"
)
TINY = dict(backbone="tiny", tiny_dims=[8, 16], tiny_depths=[1, 1], num_heads=4, chunk_size=7)
OUR_FIRST_HEAD = dict(
    scorer="mlp", qkv_proj=False, out_proj=True, y_dim=768, pe_dropout=0.0, input_mean=0.449, input_std=0.226
)


def _paper_encoder(**cfg) -> SemanticEncoder:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no ImageNet file: "RANDOM initialisation" (meta: no memory at all)
        return SemanticEncoder(cfg)


def _randomised(enc: SemanticEncoder, seed: int) -> SemanticEncoder:
    """Every tensor random (LayerNorm affine and biases too), so a wrong mapping cannot hide behind an init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return enc


def _official_layout() -> dict[str, list[int]]:
    if not KEYS_JSON.is_file():
        pytest.skip(f"{KEYS_JSON} absent: the authors' key layout lives in the shared/ folder beside the repo")
    return json.loads(KEYS_JSON.read_text())["encoder.pth"]


# --------------------------------------------------------------------------------------- (a) paper layout
def test_paper_encoder_pth_layout_maps_completely():
    layout = _official_layout()
    official = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    enc = _paper_encoder()
    expected = enc.state_dict()
    mapped = encoder_from_official(official, expected, "encoder.pth")
    assert set(mapped) == set(expected)  # none of ours missing
    assert all(list(mapped[k].shape) == list(expected[k].shape) for k in expected)
    key_map = official_encoder_key_map(layout)
    dropped = set(layout) - set(key_map)
    assert len(layout) == 699 and len(key_map) == len(expected) == 356
    assert dropped == {"positional_encoding.pe"} | {k for k in layout if k.startswith("slice_distributed.module.")}
    assert len(dropped) == 343  # the second backbone copy (342) + the PE buffer
    enc.load_state_dict(mapped, strict=True)
    # the inverse produces exactly the authors' keys and shapes
    back = encoder_to_official(expected, num_slices=128)
    assert {k: list(v.shape) for k, v in back.items()} == layout


def test_paper_parameter_count_is_the_authors():
    assert count_parameters(_paper_encoder()) == 53_588_065  # the authors' encoder
    assert count_parameters(_paper_encoder(**OUR_FIRST_HEAD)) == 52_997_473  # our first head (review, sec. 1)


def test_paper_layout_names_what_does_not_fit():
    official = {k: torch.empty(v, device="meta") for k, v in _official_layout().items()}
    for option, message in (
        ({"scorer": "mlp"}, "scorer: linear"),
        ({"qkv_proj": False}, "qkv_proj: true"),
        ({"out_proj": True, "y_dim": 512}, "out_proj: false"),
    ):
        with pytest.raises(OfficialWeightsError, match=rf"encoder\.pth.*{message}"):
            encoder_from_official(official, _paper_encoder(**option).state_dict(), "encoder.pth")
    with pytest.raises(OfficialWeightsError, match=r"encoder\.pth.*'backbone\.backbone\.features\.5\.9\..*no place"):
        encoder_from_official(official, _paper_encoder(backbone="convnext_tiny").state_dict(), "encoder.pth")


# ------------------------------------------------------------------------------------ (b) tiny round trip
def _tiny_pair(tmp_path: Path):
    torch.manual_seed(0)
    ours = _randomised(SemanticEncoder(TINY), 1).eval()
    official = encoder_to_official(ours.state_dict(), num_slices=32)
    torch.save(official, tmp_path / "encoder.pth")
    return ours, official


def test_round_trip_gives_identical_y_sem(tmp_path):
    ours, official = _tiny_pair(tmp_path)
    assert torch.equal(
        official["backbone.backbone.features.0.0.weight"],
        official["slice_distributed.module.backbone.features.0.0.weight"],
    )
    assert torch.equal(official["positional_encoding.pe"][0], sinusoidal_positions(32, 16))
    torch.manual_seed(5)
    imported = load_official_encoder(tmp_path / "encoder.pth", TINY)  # a fresh, differently seeded module
    assert not imported.training and not any(p.requires_grad for p in imported.parameters())
    x = torch.rand(2, 1, 20, 24, 11)
    ours.requires_grad_(False)  # as frozen as `imported`: trainable parameters may take another CPU kernel path
    with torch.no_grad():
        assert torch.equal(imported(x), ours(x))
    assert all(torch.equal(imported.state_dict()[k], v) for k, v in ours.state_dict().items())


def _authors_head(official: dict, e: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The authors' head written out from THEIR key names and the facts of paper-notes.md (not from our module):
    e + PE -> softmax(Linear(e)) weighted mean g -> query/key/value projections -> MHA -> LayerNorm."""
    f = nn.functional
    lin = lambda name, x: f.linear(x, official[f"{name}.weight"], official[f"{name}.bias"])  # noqa: E731
    e = e + official["positional_encoding.pe"][:, : e.shape[1]]
    a = torch.softmax(lin("soft_attention.linear", e)[..., 0], dim=1)
    g = torch.einsum("bs,bsf->bf", a, e)[:, None]
    q, k, v = (lin(f"{n}_projection", x).transpose(0, 1) for n, x in (("query", g), ("key", e), ("value", e)))
    h, _ = f.multi_head_attention_forward(
        q,
        k,
        v,
        e.shape[-1],
        num_heads,
        official["cross_attention.in_proj_weight"],
        official["cross_attention.in_proj_bias"],
        None,
        None,
        False,
        0.0,
        official["cross_attention.out_proj.weight"],
        official["cross_attention.out_proj.bias"],
        training=False,
        need_weights=False,
    )
    return f.layer_norm(
        h[0], (e.shape[-1],), official["layer_norm_after_attention.weight"], official["layer_norm_after_attention.bias"]
    )


def test_imported_encoder_computes_the_authors_head(tmp_path):
    _, official = _tiny_pair(tmp_path)
    gen = torch.Generator().manual_seed(9)  # the head re-drawn in the AUTHORS' names: our inverse is not trusted
    official = {
        k: v
        if k.startswith(("backbone.", "slice_distributed.", "positional_encoding."))
        else torch.randn(v.shape, generator=gen) * 0.3
        for k, v in official.items()
    }
    torch.save(official, tmp_path / "encoder.pth")
    enc = load_official_encoder(tmp_path / "encoder.pth", TINY)
    x = torch.rand(2, 1, 20, 24, 11)
    with torch.no_grad():
        assert torch.allclose(enc(x), _authors_head(official, enc.slice_features(x), TINY["num_heads"]), atol=1e-5)


def test_import_is_strict_and_names_the_key_and_file(tmp_path):
    ours, official = _tiny_pair(tmp_path)
    expected = ours.state_dict()

    def fails(sd, match):
        with pytest.raises(OfficialWeightsError, match=match):
            encoder_from_official(sd, expected, "their/encoder.pth")

    dup = "slice_distributed.module.backbone.features.1.0.block.0.weight"
    fails({**official, dup: official[dup] + 1}, rf"their/encoder\.pth.*{dup}.*differs")
    fails({**official, "positional_encoding.pe": official["positional_encoding.pe"] * 2}, "positional_encoding.pe")
    fails({**official, "extra.weight": torch.zeros(1)}, r"their/encoder\.pth.*unknown key 'extra\.weight'")
    fails(
        {k: v for k, v in official.items() if not k.startswith("query_projection.")},
        r"their/encoder\.pth.*q_proj\.(bias|weight)",
    )
    fails(
        {**official, "layer_norm_after_attention.bias": torch.zeros(17)},
        r"'layer_norm_after_attention\.bias' has shape \[17\]",
    )
    with pytest.raises(OfficialWeightsError, match="our encoder state dict.*proj.weight.*out_proj: false"):
        encoder_to_official(SemanticEncoder({**TINY, "out_proj": True}).state_dict())
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pth.*weights_only"):
        load_official_encoder(tmp_path / "junk.pth", TINY)
    with pytest.raises(FileNotFoundError, match="encoder.pth"):
        load_official_encoder(tmp_path / "absent.pth", TINY)


# ------------------------------------------------------------------------------------- (c) the options
def test_y_dim_resolution():
    assert resolve_y_dim({}) == 768 and resolve_y_dim({"backbone": "tiny"}) == 64  # tiny_dims default [16, 32, 64]
    assert resolve_y_dim(TINY) == 16 and resolve_y_dim({**TINY, "y_dim": 16}) == 16
    assert resolve_y_dim({**TINY, "out_proj": True, "y_dim": 40}) == 40
    assert resolve_y_dim({**TINY, "out_proj": True}) == 16
    with pytest.raises(ValueError, match=r"dae\.encoder\.y_dim = 40.*out_proj is false.*tiny_dims\[-1\] = 16"):
        resolve_y_dim({**TINY, "y_dim": 40}, "dae.encoder")
    with pytest.raises(ValueError, match="ldae.encoder.scorer"):
        resolve_encoder_config({"scorer": "tanh"})
    assert SemanticEncoder({**TINY, "out_proj": True, "y_dim": 40}).y_dim == 40


def _features(enc: SemanticEncoder, x: torch.Tensor) -> torch.Tensor:
    e = enc.slice_features(x)
    return e + sinusoidal_positions(e.shape[1], enc.feat_dim)[None]


def test_y_sem_is_the_layernorm_output():
    torch.manual_seed(0)
    enc = SemanticEncoder(TINY).eval()  # LayerNorm affine at its init (1, 0)
    x = torch.rand(3, 1, 20, 24, 9)
    with torch.no_grad():
        y = enc(x)
        assert isinstance(enc.proj, nn.Identity) and y.shape == (3, 16)
        assert torch.allclose(y.mean(1), torch.zeros(3), atol=1e-5)
        assert torch.allclose(y.std(1, unbiased=False), torch.ones(3), atol=1e-3)
        _randomised(enc, 2)
        y = enc(x)
        z = (y - enc.norm.bias) / enc.norm.weight  # before the affine: normalised
        assert torch.allclose(z.mean(1), torch.zeros(3), atol=1e-4)
        assert torch.allclose(z.std(1, unbiased=False), torch.ones(3), atol=1e-3)
        torch.manual_seed(0)
        first = _randomised(SemanticEncoder({**TINY, "out_proj": True, "y_dim": 40}), 2).eval()
        y40 = first(x)
        assert y40.shape == (3, 40) and isinstance(first.proj, nn.Linear)
        assert y40.mean(1).abs().min() > 1e-2  # a Linear after the LayerNorm: no longer normalised


def test_linear_scorer_is_one_linear_and_softmax():
    enc = _randomised(SemanticEncoder(TINY), 3).eval()
    assert isinstance(enc.pool_score, nn.Linear) and enc.pool_score.out_features == 1
    mlp = SemanticEncoder({**TINY, "scorer": "mlp"})
    assert [type(m) for m in mlp.pool_score] == [nn.Linear, nn.Tanh, nn.Linear]
    x = torch.rand(2, 1, 20, 24, 9)
    with torch.no_grad():
        _, a, _ = enc(x, return_attention=True)
        e = _features(enc, x)
        by_hand = torch.softmax(e @ enc.pool_score.weight[0] + enc.pool_score.bias, dim=1)
    assert torch.allclose(a, by_hand, atol=1e-6)


def test_qkv_projections_come_before_the_attention_in_projection():
    """q/k/v Linear layers before nn.MultiheadAttention == the same MHA with the projections folded into its
    in_proj (W = W_in W_p, b = W_in b_p + b_in): a composition of linear maps, in this order."""
    with_proj = _randomised(SemanticEncoder(TINY), 4).eval()
    folded = SemanticEncoder({**TINY, "qkv_proj": False}).eval()
    sd = {k: v for k, v in with_proj.state_dict().items() if k.split(".")[0] not in ("q_proj", "k_proj", "v_proj")}
    w_in, b_in = sd["cross_attn.in_proj_weight"].chunk(3), sd["cross_attn.in_proj_bias"].chunk(3)
    projections = (with_proj.q_proj, with_proj.k_proj, with_proj.v_proj)
    sd["cross_attn.in_proj_weight"] = torch.cat([w @ p.weight for w, p in zip(w_in, projections)])
    sd["cross_attn.in_proj_bias"] = torch.cat([w @ p.bias + b for w, b, p in zip(w_in, b_in, projections)])
    folded.load_state_dict(sd, strict=True)
    x = torch.rand(2, 1, 20, 24, 9)
    with torch.no_grad():
        assert torch.allclose(folded(x), with_proj(x), atol=1e-5)
        with_proj.k_proj.weight.mul_(0.5)
        assert not torch.allclose(folded(x), with_proj(x), atol=1e-3)  # the projections do act


def test_pe_dropout_and_input_scaling():
    x = torch.rand(2, 1, 20, 24, 9)
    cfg = {**TINY, "attn_dropout": 0.0}  # the tiny backbone has no stochastic depth: PE dropout is the only noise
    enc = SemanticEncoder(cfg).train()
    torch.manual_seed(0)
    a = enc(x)
    assert not torch.allclose(a, enc(x))  # dropout 0.1 after the positional encoding
    plain = SemanticEncoder({**cfg, "pe_dropout": 0.0}).train()
    plain.load_state_dict(enc.state_dict())
    assert torch.equal(plain(x), plain(x))
    assert torch.equal(enc.eval()(x), plain.eval()(x))
    grey = SemanticEncoder({**TINY, "input_mean": 0.449, "input_std": 0.226}).eval()
    grey.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert torch.allclose(grey(x), enc((x - 0.449) / 0.226), atol=1e-5)
        assert not torch.allclose(grey(x), enc(x), atol=1e-2)
    assert resolve_encoder_config(OFFICIAL_ENCODER_CONFIG) == resolve_encoder_config({})  # defaults = authors'
    assert SemanticEncoder(TINY).input_mean == 0.0 and SemanticEncoder(TINY).input_std == 1.0


# ------------------------------------------------------------------------------------------- (d) the probe
def _authors_probe(dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    linear = nn.Linear(dim, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1, dim, generator=gen))
        linear.bias.fill_(0.89)
    mean = torch.randn(dim, generator=gen) * 3
    std = torch.rand(dim, generator=gen) + 0.5
    return linear, mean, std


@pytest.mark.parametrize("layout", ["lightning", "plain"])
def test_probe_import_matches_the_authors_layer_by_hand(tmp_path, layout):
    linear, mean, std = _authors_probe()
    sd = {"weight": linear.weight.detach().clone(), "bias": linear.bias.detach().clone()}
    ckpt = (
        {"state_dict": {f"model.classifier.{k}": v for k, v in sd.items()}, "epoch": 57, "global_step": 9}
        if layout == "lightning"
        else sd
    )
    torch.save(ckpt, tmp_path / "disease_classifier.ckpt")
    torch.save(mean, tmp_path / "semantic_mean.pt")
    torch.save(std, tmp_path / "semantic_std.pt")
    write_official_probe(
        tmp_path / "disease_classifier.ckpt",
        tmp_path / "semantic_mean.pt",
        tmp_path / "semantic_std.pt",
        tmp_path / "probe.pt",
    )
    probe = load_probe(tmp_path / "probe.pt", positive_class="CN")  # AD = 0, CN = 1 in both
    y = np.random.default_rng(0).normal(0, 3, size=(50, 16))
    with torch.no_grad():
        by_hand = torch.sigmoid(linear((torch.from_numpy(y) - mean.double()).div(std.double()).float()))[:, 0]
    assert np.allclose(probe.predict_proba(y), by_hand.numpy(), atol=1e-6)
    w = linear.weight.detach()[0].double().numpy()
    assert np.allclose(probe.direction(), w / np.linalg.norm(w))
    with pytest.raises(ValueError, match="positive class is 'CN'.*'AD'"):
        load_probe(tmp_path / "probe.pt", positive_class="AD")


def test_probe_file_round_trip_and_errors(tmp_path):
    from ldae.evaluation.probes import train_linear_probe

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 6)), (rng.random(40) > 0.5).astype(np.float32)
    probe = train_linear_probe(X[:30], y[:30], X[30:], y[30:], "classification", epochs=3)
    save_probe(probe, tmp_path / "ours.pt")
    again = load_probe(tmp_path / "ours.pt")
    assert np.allclose(again.predict_proba(X), probe.predict_proba(X), atol=1e-6)
    assert probe_state(again)["feature_mean"].shape == (6,)
    linear, mean, std = _authors_probe()
    with pytest.raises(OfficialWeightsError, match="clf.ckpt.*ONE Linear"):
        probe_from_official(
            {"a.weight": torch.zeros(1, 16), "a.bias": torch.zeros(1), "b.weight": torch.zeros(1)},
            mean,
            std,
            "clf.ckpt",
        )
    with pytest.raises(OfficialWeightsError, match="semantic_mean.pt.*15 values.*16 inputs"):
        probe_from_official(linear.state_dict(), mean[:15], std, "clf.ckpt")
    with pytest.raises(OfficialWeightsError, match="semantic_std.pt.*non-positive"):
        probe_from_official(linear.state_dict(), mean, -std, "clf.ckpt")
    torch.save({"weight": torch.zeros(1, 3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*not a probe file"):
        load_probe(tmp_path / "other.pt")
