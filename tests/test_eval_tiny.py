"""The pipelines on tiny random-init models (tests/helpers/tiny_models.py): LDAE/LDDIM/DAE encode-decode paths,
embeddings files, timing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ldae.evaluation.embed import compute_embeddings, iterate_batches, load_embeddings, save_embeddings
from ldae.evaluation.timing import efficiency_table, time_call, training_seconds
from ldae.models import count_parameters
from ldae.models.pipelines import seeded_noise

from helpers.tiny_models import tiny_dae, tiny_ldae, volumes


def test_ldae_pipeline_paths():
    ldae = tiny_ldae()
    x = volumes(2)
    y = ldae.semantic(x)
    z = ldae.latent(x)
    assert y.shape == (2, 16) and z.shape == (2, 3, 8, 8, 8)
    assert ldae.decode(z).shape == x.shape
    # DDIM inversion then decoding returns (approximately) the latent: the encoded x_T carries the detail
    x_T = ldae.invert(z, y, 20)
    z_back = ldae.sample(x_T, y, 20)
    assert (z_back - z).abs().mean() < 0.25 * z.abs().mean()
    # y_sem steers the decoding; the unconditional (LDDIM) path differs from the guided one
    noise = seeded_noise(tuple(z.shape), 3)
    a = ldae.sample(noise, y, 3)
    b = ldae.sample(noise, torch.randn_like(y) * 5, 3)
    c = ldae.sample(noise, None, 3)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    assert torch.equal(seeded_noise((2, 3), 1), seeded_noise((2, 3), 1))
    assert ldae.reconstruct(x, 2).shape == x.shape
    # Table 5 (paper ~920M): encoder + estimator with the frozen LDM inside (counted once); the AE apart
    assert ldae.parameter_count() == count_parameters(ldae.estimator, ldae.encoder)
    assert ldae.parameter_count() == sum(p.numel() for m in (ldae.estimator, ldae.encoder) for p in m.parameters())
    assert ldae.parameter_count() >= sum(p.numel() for p in ldae.estimator.ldm.parameters())
    assert ldae.autoencoder_parameter_count() == sum(p.numel() for p in ldae.autoencoder.parameters())


def test_dae_pipeline_resizes_and_roundtrips():
    dae = tiny_dae(shape=(8, 8, 8))
    x = volumes(2)
    xd = dae.resize(x)
    assert xd.shape == (2, 1, 8, 8, 8)
    assert torch.allclose(xd.mean(), x.mean(), atol=1e-5)  # area averaging keeps the mean
    y = dae.dae.encode(xd)
    x_T = dae.invert(xd, y, 3)
    assert x_T.shape == xd.shape and torch.isfinite(x_T).all()
    back = dae.sample(x_T, y, 3)
    assert not torch.allclose(back, dae.sample(x_T, torch.randn_like(y) * 5, 3))  # y_sem steers the decoding
    assert dae.reconstruct(x, 2).shape == xd.shape
    assert tiny_dae().resize(x) is not None and tiny_dae().resize(x).shape == x.shape


def test_pipelines_use_their_ddim_settings():
    from ldae.diffusion import DDIMSettings, ddim_sample

    ldae = tiny_ldae()
    z = 3 * seeded_noise((1, 3, 8, 8, 8), 0)  # beyond +-1: the clamp bites
    y = ldae.semantic(volumes(1))
    ours = DDIMSettings(None, "exact")
    expect = ddim_sample(ldae.eps_fn(y), z, ldae.schedule, 4, clip_x0=None, grid="exact")
    ldae.ddim = ours
    assert torch.equal(ldae.sample(z, y, 4), expect)
    ldae.ddim = DDIMSettings()  # the authors' clamp and grid
    assert torch.equal(ldae.sample(z, y, 4), ddim_sample(ldae.eps_fn(y), z, ldae.schedule, 4))
    assert not torch.allclose(ldae.sample(z, y, 4), expect)
    # the DAE reads the clamp on the 2x-1 scale: unsigned diffusion clamps to [0, 1]
    dae = tiny_dae()
    assert dae.ddim_kwargs() == {"clip_x0": (-1.0, 1.0), "grid": "authors"}
    dae.signed = False
    assert dae.ddim_kwargs() == {"clip_x0": (0.0, 1.0), "grid": "authors"}
    dae.ddim = ours
    assert dae.ddim_kwargs() == {"clip_x0": None, "grid": "exact"}


def test_embeddings_file_roundtrip(tmp_path):
    ldae = tiny_ldae()
    records = [
        {
            "participant_id": f"sub-{i // 2}",
            "session_id": f"ses-M{6 * (i % 2):02d}",
            "image": str(i),
            "split": "test" if i < 2 else "train",
        }
        for i in range(5)
    ]
    images = volumes(5)
    batches = iterate_batches(records, lambda p: images[int(p)], batch_size=2)

    def invert(x, y):
        z = ldae.latent(x)
        return z, ldae.invert(z, y, 3)

    ids, y, extra = compute_embeddings(batches, ldae.semantic, invert, lambda r: r["split"] == "test")
    assert y.shape == (5, 16) and list(extra["rows"]) == [0, 1]
    save_embeddings(tmp_path / "ldae.npz", ids, y, "ldae", extra, steps=3, scale_factor=2.0)
    emb = load_embeddings(tmp_path / "ldae.npz")
    assert emb.model == "ldae" and emb.ids.equals(ids) and np.array_equal(emb.y, y)
    assert int(emb.extra["steps"]) == 3
    assert set(emb.lookup("x_T")) == {("sub-0", "ses-M00"), ("sub-0", "ses-M06")}
    table = pd.DataFrame({"participant_id": ["sub-1", "sub-0"], "session_id": ["ses-M00", "ses-M06"]})
    assert np.array_equal(emb.aligned(table), y[[2, 1]])
    with pytest.raises(KeyError):
        emb.aligned(pd.DataFrame({"participant_id": ["x"], "session_id": ["y"]}))
    # y_sem of a batch equals y_sem of the single scans (eval mode, no batch coupling)
    assert torch.allclose(ldae.semantic(images[:1])[0], torch.from_numpy(y[0]), atol=1e-5)


def test_timing_and_efficiency_table(tmp_path):
    calls = []
    result = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and result["repeats"] == 3 and result["seconds"] >= 0
    bench = tmp_path / "b.tsv"
    bench.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t100\n")
    assert training_seconds([bench, tmp_path / "missing.tsv"]) == 12.5
    assert np.isnan(training_seconds([tmp_path / "missing.tsv"]))
    table = efficiency_table({"LDAE": {"seconds": 2.0}, "DAE": {"seconds": 40.0}})
    assert list(table["speed-up vs DAE"]) == [20.0, 1.0]


def test_rule_json_keeps_small_numbers_numbers():
    """Rules pass config sections as json.dumps text; YAML 1.1 would read 1e-05 as the string '1e-05'."""
    from ldae.verbs import parse_config_arg

    assert parse_config_arg('{"lr": 1e-05, "steps": [10, 20]}') == {"lr": 1e-05, "steps": [10, 20]}
    assert parse_config_arg("") == {} and parse_config_arg(None) == {}
    with pytest.raises(ValueError):
        parse_config_arg("[1, 2]")


def test_timing_precision_follows_training(monkeypatch):
    """Table 5 times in the training precision on CUDA (auto -> bf16 where supported, as the training verbs) and in
    fp32 on a CPU, and says so."""
    from ldae.evaluation.timing import precision_context, timing_precision

    assert timing_precision("auto", "cpu") == ("fp32 (CPU)", None)
    assert timing_precision("16-mixed", "cpu")[1] is None  # a CPU always times fp32
    assert timing_precision("16-mixed", "cuda") == ("fp16 autocast (CUDA, training precision 16-mixed)", torch.float16)
    assert timing_precision("32-true", "cuda")[1] is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert timing_precision("auto", "cuda") == ("bf16 autocast (CUDA, training precision bf16-mixed)", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert timing_precision("auto", "cuda")[1] is None  # training's auto falls back to 32-true there
    with pytest.raises(ValueError, match="evaluation.timing.precision"):
        timing_precision("8-bit", "cuda")
    with precision_context("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    with precision_context("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
