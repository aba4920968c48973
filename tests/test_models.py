"""Networks: shapes, parameter counts, weight loading without network access, frozen/trainable split, learning."""

from __future__ import annotations

import socket
import urllib.request
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

torch.set_num_threads(1)

from ldae.diffusion import DiffusionSchedule, eps_loss, pdae_loss  # noqa: E402
from ldae.models import (  # noqa: E402
    GradientEstimator,
    SupervisedEncoder,
    VoxelDAE,
    build_autoencoder,
    build_discriminator,
    build_ldm_unet,
    build_perceptual_loss,
    count_parameters,
    encode_mean,
    latent_scale_factor,
    load_pretrained_autoencoder,
)
from ldae.models.io import load_frozen_unet  # noqa: E402
from ldae.models.ldm_unet import AdaGNResnetBlock, resample_factors, set_resample_axes  # noqa: E402
from ldae.models.semantic_encoder import SemanticEncoder, rgb_to_single_channel_conv  # noqa: E402

from helpers import tiny_models  # noqa: E402

TINY_AE = tiny_models.TINY_AE_GAN
TINY_LDM = {**tiny_models.TINY_LDM, "attention_levels": [False, True, True], "dropout": 0.1}
TINY_ENC = dict(backbone="tiny", tiny_dims=[8, 24], tiny_depths=[1, 1], y_dim=24, num_heads=8, chunk_size=5)
TINY_DAE = dict(channels=[8, 16], num_res_blocks=1, attention_levels=[False, True], norm_num_groups=8, y_dim=24)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test."""

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def _perturb_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Give zero-initialised layers (MONAI's conv2 / output conv) non-zero weights, as after training."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1 and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _pretrained_ldm(seed: int = 0) -> nn.Module:
    """A 'trained' tiny LDM, as it comes out of stage 2: trainable parameters, training mode."""
    torch.manual_seed(seed)
    return _perturb_(build_ldm_unet(TINY_LDM)).train()


# ---------------------------------------------------------------------------------------------------------- sizes


def test_paper_parameter_counts():
    """Paper configuration, built on the meta device (no memory, < 1 s)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae, disc = build_autoencoder({}), build_discriminator({})
        ldm = build_ldm_unet({})
        est = GradientEstimator(ldm, y_dim=768)
        enc = SemanticEncoder({})
        dae = VoxelDAE({})
    n_ae, n_ldm, n_enc = count_parameters(ae), count_parameters(ldm), count_parameters(enc)
    n_branch = count_parameters(est, trainable_only=True)
    assert abs(n_ae - 14e6) / 14e6 < 0.05  # paper: ~14M
    assert abs(n_ldm - 486e6) / 486e6 < 0.01  # paper: "LDDIM @486M"
    assert abs(n_ldm + n_branch + n_enc - 920e6) / 920e6 < 0.02  # paper: full LDAE ~920M
    assert abs(count_parameters(dae) - 130e6) / 130e6 < 0.05  # paper Table 5: DAE 130M
    assert count_parameters(disc) > 1e6
    assert n_enc - count_parameters(enc.backbone) < 5e6  # ConvNeXt-Small dominates the encoder


def test_autoencoder_shapes_and_helpers():
    torch.manual_seed(0)
    ae = build_autoencoder(TINY_AE)
    ref = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        num_res_blocks=1,
        channels=(8, 16),
        attention_levels=(False, False),
        latent_channels=3,
        norm_num_groups=8,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )
    assert [tuple(p.shape) for p in ae.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    x = torch.rand(2, 1, 16, 16, 16)
    recon, mu, sigma = ae(x)
    assert recon.shape == x.shape and mu.shape == (2, 3, 8, 8, 8) and sigma.shape == mu.shape
    assert torch.equal(encode_mean(ae, x), ae.encode(x)[0])
    d = build_discriminator(TINY_AE)
    assert d(x)[-1].shape[:2] == (2, 1)
    z = torch.randn(1000) * 2.5 + 1.0
    assert latent_scale_factor(z) == pytest.approx(1 / z.std().item(), rel=1e-6)
    assert latent_scale_factor([z[:300], z[300:]]) == pytest.approx(latent_scale_factor(z), rel=1e-9)
    with pytest.raises(ValueError):
        latent_scale_factor(torch.zeros(10))


def test_autoencoder_l1_decreases():
    torch.manual_seed(0)
    ae = build_autoencoder(TINY_AE)
    x = torch.rand(2, 1, 16, 16, 16)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        recon, _, _ = ae(x)
        loss = (recon - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_load_pretrained_autoencoder(tmp_path):
    torch.manual_seed(1)
    src = build_autoencoder(TINY_AE)
    sd = src.state_dict()
    assert any("postconv" in k for k in sd)
    # MONAI-Generative (zoo bundle) layout: upsampling convs were called "conv", not "postconv"
    old = {k.replace("postconv", "conv"): v for k, v in sd.items()}
    torch.save(old, tmp_path / "old.pt")
    torch.save({"state_dict": sd}, tmp_path / "new.pt")
    for name in ("old.pt", "new.pt"):
        dst = load_pretrained_autoencoder(build_autoencoder(TINY_AE), tmp_path / name)
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in sd.items())
    with pytest.warns(UserWarning, match="RANDOM"):
        load_pretrained_autoencoder(build_autoencoder(TINY_AE), tmp_path / "absent.pt")
    other = build_autoencoder({**TINY_AE, "channels": [8, 8]})
    with pytest.raises(ValueError, match="does not match"):
        load_pretrained_autoencoder(other, tmp_path / "new.pt")


def test_perceptual_loss_local_weights_only(tmp_path, no_network):
    import torchvision

    torch.manual_seed(0)
    sq = torchvision.models.squeezenet1_1(weights=None)
    torch.save(sq.state_dict(), tmp_path / "squeezenet1_1.pt")
    loss = build_perceptual_loss({"spatial_dims": 3}, tmp_path / "squeezenet1_1.pt")
    assert loss is not None and not any(p.requires_grad for p in loss.parameters())
    net = loss.perceptual_function.net
    assert torch.equal(net.slice1[0].weight, sq.features[0].weight)  # backbone from the local file
    assert torch.count_nonzero(loss.perceptual_function.lin0.model[-1].weight) > 0  # lpips' shipped calibration
    x, y = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, y).item() > 0
    with pytest.warns(UserWarning, match="DISABLED"):
        assert build_perceptual_loss({}, tmp_path / "missing.pt") is None


# ------------------------------------------------------------------------------------------------ LDM + estimator


def test_ldm_unet_tiny():
    torch.manual_seed(0)
    unet = build_ldm_unet(TINY_LDM)
    blocks = [m for m in unet.modules() if isinstance(m, AdaGNResnetBlock)]
    assert blocks and all(b.time_conditioning == "scale_shift" and b.dropout.p == 0.1 for b in blocks)
    assert all(b.time_emb_proj.out_features == 2 * b.out_channels for b in blocks)
    # = plain MONAI U-Net + the wider (2C) AdaGN time projections
    plain = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=3,
        out_channels=3,
        num_res_blocks=1,
        channels=(16, 32, 32),
        attention_levels=(False, True, True),
        norm_num_groups=8,
        resblock_updown=True,
        num_head_channels=(16, 32, 32),
    )
    extra = sum(b.out_channels * (b.emb_channels + 1) for b in blocks)
    assert count_parameters(unet) == count_parameters(plain) + extra
    x, t = torch.randn(2, 3, 8, 8, 8), torch.tensor([5, 900])
    assert unet(x, t).shape == x.shape
    _perturb_(unet)
    unet.train()
    assert not torch.equal(unet(x, t), unet(x, t))  # dropout active in training
    unet.eval()
    assert torch.equal(unet(x, t), unet(x, t))
    with torch.device("meta"):
        additive = build_ldm_unet({**TINY_LDM, "time_conditioning": "additive"})
    assert count_parameters(additive) < count_parameters(unet)


def test_ldm_eps_loss_decreases():
    torch.manual_seed(0)
    unet = build_ldm_unet({**TINY_LDM, "dropout": 0.0})
    sch = DiffusionSchedule()
    x0, noise, t = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 8, 8, 8), torch.tensor([100, 600])
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = eps_loss(unet, x0, t, noise, sch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_gradient_estimator_structure_and_init():
    ldm = _pretrained_ldm()
    est = GradientEstimator(ldm, y_dim=24)
    assert not ldm.training and not any(p.requires_grad for p in ldm.parameters())  # frozen by the estimator
    x, t, y = torch.randn(2, 3, 8, 8, 8), torch.tensor([3, 700]), torch.randn(2, 24)
    g, eps = est(x, t, y, return_eps=True)
    assert g.shape == x.shape and torch.count_nonzero(g) == 0  # zero-initialised output conv
    assert torch.allclose(eps, ldm(x, t), atol=1e-6) and torch.allclose(est.frozen_eps(x, t), eps, atol=1e-6)
    trainable = {id(p) for p in est.trainable_parameters()}
    assert trainable == {id(p) for p in est.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in est.ldm.parameters())
    assert not any(id(p) in trainable for p in est.ldm.parameters())
    # new branch: middle block + up path + out, AdaGN-conditioned on y, separate weights from the LDM decoder
    assert {"middle_block", "up_blocks", "out"} <= set(est.branch.keys())
    cond = [m for m in est.branch.modules() if isinstance(m, AdaGNResnetBlock)]
    assert cond and all(m.cond_emb_proj is not None for m in cond)
    assert est.y_proj.out_features == ldm.time_embed[-1].out_features
    assert all(p.data_ptr() != q.data_ptr() for p in est.branch.parameters() for q in ldm.parameters())
    shared = GradientEstimator(_pretrained_ldm(), y_dim=24, share_middle_block=True)
    assert "middle_block" not in shared.branch
    g2, eps2 = shared(x, t, y, return_eps=True)
    assert torch.allclose(eps2, shared.ldm(x, t), atol=1e-6)
    with pytest.raises(ValueError):
        est(x, t, torch.randn(2, 7))
    warm = GradientEstimator(_pretrained_ldm(), y_dim=24, init_branch_from_ldm=True)
    w_branch = warm.branch["up_blocks"][0].resnets[0].conv1.conv.weight
    assert torch.equal(w_branch, warm.ldm.up_blocks[0].resnets[0].conv1.conv.weight)
    assert not torch.equal(est.branch["up_blocks"][0].resnets[0].conv1.conv.weight, w_branch)  # fresh init
    assert torch.count_nonzero(warm(x, t, y)) == 0


def test_gradient_estimator_trains_and_ldm_stays_frozen():
    ldm = _pretrained_ldm()
    before = {k: v.clone() for k, v in ldm.state_dict().items()}
    est = GradientEstimator(ldm, y_dim=24)
    est.train()
    assert not est.ldm.training and all(not m.training for m in est.ldm.modules())
    assert est.branch.training
    enc = SemanticEncoder(TINY_ENC)
    sch = DiffusionSchedule()
    torch.manual_seed(0)
    x0, noise = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 8, 8, 8)
    img, t = torch.rand(2, 1, 16, 16, 10), torch.tensor([300, 800])
    opt = torch.optim.Adam(list(est.trainable_parameters()) + list(enc.parameters()), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = pdae_loss(est, x0, t, noise, enc(img), sch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0]
    assert all(torch.equal(before[k], v) for k, v in est.ldm.state_dict().items())
    assert not est.ldm.training
    assert torch.count_nonzero(est(x0, t, enc(img))) > 0  # G is no longer zero


def _down_up_shapes(model: nn.Module, unet: nn.Module, *inputs) -> tuple[list, list]:
    """Spatial shapes after each down block and each up block of ``unet`` during ``model(*inputs)``."""
    down, up = [], []
    hooks = [b.register_forward_hook(lambda m, i, o: down.append(tuple(o[0].shape[2:]))) for b in unet.down_blocks]
    hooks += [b.register_forward_hook(lambda m, i, o: up.append(tuple(o.shape[2:]))) for b in unet.up_blocks]
    try:
        model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return down, up


@pytest.mark.parametrize(
    "axes, expected",
    [
        ("last_two", [(16, 10, 8), (16, 5, 4), (16, 5, 4)]),  # authors: 16x20x16 -> 16x10x8 -> 16x5x4
        ("all", [(8, 10, 8), (4, 5, 4), (4, 5, 4)]),  # MONAI's isotropic samplers
    ],
)
def test_paper_ldm_feature_shapes_and_parameter_counts(axes, expected):
    """Paper size on the meta device: the resampling axes change the feature shapes, not the parameters."""
    with torch.device("meta"):
        ldm = build_ldm_unet({"resample_axes": axes})
        est = GradientEstimator(ldm, y_dim=768)
        x, t, y = torch.empty(1, 3, 16, 20, 16), torch.tensor([5]), torch.empty(1, 768)
    assert count_parameters(ldm) == 486_927_363  # the authors' UNet, tensor for tensor
    assert count_parameters(est, trainable_only=True) == 378_411_779  # the authors' ShiftUNet branch
    down, up = _down_up_shapes(ldm, ldm, x, t)
    assert down == expected and up == [expected[0], (16, 20, 16), (16, 20, 16)]
    branch = nn.Module()
    branch.down_blocks, branch.up_blocks = ldm.down_blocks, est.branch["up_blocks"]  # the branch follows the LDM
    down_b, up_b = _down_up_shapes(lambda *a: est(*a, return_eps=True), branch, x, t, y)
    assert down_b == expected and up_b == [expected[0], (16, 20, 16), (16, 20, 16)]


def test_ldm_authors_defaults_norm_eps_resampling_and_init():
    unet = build_ldm_unet(TINY_LDM)
    norms = [m for m in unet.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)  # authors: torch's GroupNorm default
    attn = [m.attn.out_proj for m in unet.modules() if isinstance(m, SpatialAttentionBlock)]
    assert attn and all(torch.count_nonzero(p) == 0 for m in attn for p in m.parameters())  # zero-initialised
    est = GradientEstimator(_pretrained_ldm(), y_dim=24)
    branch_attn = [m.attn.out_proj for m in est.branch.modules() if isinstance(m, SpatialAttentionBlock)]
    assert branch_attn and all(torch.count_nonzero(p) == 0 for m in branch_attn for p in m.parameters())
    assert resample_factors(3, "last_two") == (1, 2, 2) and resample_factors(3, "all") == (2, 2, 2)
    assert resample_factors(2, "last_two") == (2, 2)
    with pytest.raises(ValueError, match="resample_axes"):
        build_ldm_unet({**TINY_LDM, "resample_axes": "first"})
    # the authors' samplers: average pooling (1, 2, 2), nearest x2 on the last two axes
    x = torch.randn(2, 16, 4, 6, 8)
    block = unet.down_blocks[0].downsampler
    assert torch.equal(block.downsample(x), F.avg_pool3d(x, (1, 2, 2)))
    up = unet.up_blocks[0].upsampler
    assert torch.equal(up.upsample(x), F.interpolate(x, size=(4, 12, 16), mode="nearest"))
    # conv samplers (resblock_updown: false) follow the axes too
    conv = build_ldm_unet({**TINY_LDM, "resblock_updown": False}).eval()
    down, up_shapes = _down_up_shapes(conv, conv, torch.randn(1, 3, 4, 8, 8), torch.tensor([3]))
    assert down == [(4, 4, 4), (4, 2, 2), (4, 2, 2)] and up_shapes == [(4, 4, 4), (4, 8, 8), (4, 8, 8)]
    # switching back to isotropic restores MONAI's samplers exactly
    iso = set_resample_axes(build_ldm_unet(TINY_LDM), "all")
    assert torch.equal(iso.down_blocks[0].downsampler.downsample(x), F.avg_pool3d(x, 2))


def test_voxel_dae_resamples_isotropically():
    """The image-space DAE keeps MONAI's isotropic samplers (dae.network.resample_axes: all)."""
    with torch.device("meta"):
        dae = VoxelDAE({**TINY_DAE, "encoder": TINY_ENC})
        x, t = torch.empty(1, 1, 8, 8, 8), torch.tensor([5])
        y = torch.empty(1, 24)
    down, _ = _down_up_shapes(dae, dae.unet, x, t, y)
    assert down == [(4, 4, 4), (4, 4, 4)]


def test_load_frozen_unet(tmp_path):
    src = _pretrained_ldm(3)
    torch.save({"state_dict": {"model." + k: v for k, v in src.state_dict().items()}, "epoch": 5}, tmp_path / "ldm.pt")
    unet = load_frozen_unet(TINY_LDM, tmp_path / "ldm.pt")
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in src.state_dict().items())
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    with pytest.raises(FileNotFoundError, match="ldae.ldm_checkpoint"):
        load_frozen_unet(TINY_LDM, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="ldae.ldm_checkpoint"):
        load_frozen_unet(TINY_LDM, None)
    with pytest.raises(ValueError, match="ldae.ldm_checkpoint.*(missing|shape)"):
        load_frozen_unet({**TINY_LDM, "channels": [16, 32, 48]}, tmp_path / "ldm.pt")
    partial = {k: v for i, (k, v) in enumerate(src.state_dict().items()) if i % 2}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_frozen_unet(TINY_LDM, tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_frozen_unet(TINY_LDM, tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------------ semantic encoder


def test_rgb_filters_summed():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 4, stride=4)
    one = rgb_to_single_channel_conv(conv)
    assert one.in_channels == 1 and torch.equal(one.weight, conv.weight.sum(1, keepdim=True))
    grey = torch.rand(2, 1, 8, 8)
    assert torch.allclose(one(grey), conv(grey.expand(-1, 3, -1, -1)), atol=1e-6)


def test_semantic_encoder_shapes_chunks_checkpointing():
    torch.manual_seed(0)
    enc = SemanticEncoder({**TINY_ENC, "slice_axis": 2}).eval()
    x = torch.rand(2, 1, 16, 12, 11)
    y, a, attn = enc(x, return_attention=True)
    assert y.shape == (2, 24) and a.shape == (2, 11) and torch.allclose(a.sum(1), torch.ones(2))
    assert enc.slice_features(x).shape == (2, 11, 24)
    assert SemanticEncoder({**TINY_ENC, "slice_axis": 0}).slice_features(x).shape == (2, 16, 24)
    big = SemanticEncoder({**TINY_ENC, "chunk_size": 1000}).eval()
    big.load_state_dict(enc.state_dict())
    assert torch.allclose(big(x), y, atol=1e-5)
    # gradient checkpointing: same gradients
    ck = SemanticEncoder({**TINY_ENC, "gradient_checkpointing": True, "attn_dropout": 0.0, "pe_dropout": 0.0}).train()
    plain = SemanticEncoder({**TINY_ENC, "attn_dropout": 0.0, "pe_dropout": 0.0}).train()
    plain.load_state_dict(ck.state_dict())
    for m in (ck, plain):
        m(x).square().sum().backward()
    for (n, p), q in zip(ck.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n


def test_semantic_encoder_local_weights_no_download(tmp_path, no_network):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    ref = ConvNeXt([CNBlockConfig(8, 24, 1), CNBlockConfig(24, None, 1)])  # an "ImageNet" 3-channel model
    torch.save(ref.state_dict(), tmp_path / "convnext.pt")
    enc = SemanticEncoder({**TINY_ENC, "pretrained_path": str(tmp_path / "convnext.pt")})
    stem = enc.backbone.features[0][0]
    assert stem.in_channels == 1 and torch.equal(stem.weight, ref.features[0][0].weight.sum(1, keepdim=True))
    assert torch.equal(enc.backbone.features[1][0].block[0].weight, ref.features[1][0].block[0].weight)
    with pytest.warns(UserWarning, match="RANDOM"):
        SemanticEncoder({**TINY_ENC, "pretrained_path": str(tmp_path / "absent.pt")})
    with torch.device("meta"), pytest.warns(UserWarning, match="RANDOM"):  # paper backbone, no weights: no download
        big = SemanticEncoder({"backbone": "convnext_small"})
    assert big.feat_dim == 768 and big.backbone.features[0][0].in_channels == 1
    bad = ConvNeXt([CNBlockConfig(8, 32, 1), CNBlockConfig(32, None, 1)])
    torch.save(bad.state_dict(), tmp_path / "bad.pt")
    with pytest.raises((ValueError, RuntimeError)):
        SemanticEncoder({**TINY_ENC, "pretrained_path": str(tmp_path / "bad.pt")})


# ------------------------------------------------------------------------------------------------------ baselines


def test_supervised_encoder_learns():
    torch.manual_seed(0)
    model = SupervisedEncoder({"num_outputs": 1}, {**TINY_ENC, "attn_dropout": 0.0})
    x = torch.rand(4, 1, 16, 16, 8)
    x[2:] *= 0.3
    target = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model(x).shape == (4, 1) and model.features(x).shape == (4, 24)
    assert losses[-1] < 0.8 * losses[0]


def test_voxel_dae_conditioning_and_loss():
    torch.manual_seed(0)
    dae = VoxelDAE({**TINY_DAE, "dropout": 0.0}, {**TINY_ENC, "attn_dropout": 0.0})
    blocks = [m for m in dae.unet.modules() if isinstance(m, AdaGNResnetBlock)]
    assert blocks and all(b.cond_emb_proj is not None for b in blocks)  # every block sees y (DiffAE)
    x0 = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    y = dae.encode(x0)
    t = torch.tensor([10, 500])
    assert dae(x0, t, y).shape == x0.shape
    _perturb_(dae.unet)
    assert not torch.allclose(dae(x0, t, y), dae(x0, t, torch.randn_like(y)))  # y changes the prediction
    sch = DiffusionSchedule()
    noise = torch.randn_like(x0)
    opt = torch.optim.Adam(dae.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        y = dae.encode(x0)
        loss = eps_loss(lambda xt, tt, y=y: dae(xt, tt, y), x0, t, noise, sch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
