"""bench/training/memory_model.py: the saved-activation count on FakeTensors (docs/memory.md's table rests on it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "training"))
import memory_model as M  # noqa: E402


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1),
        nn.GroupNorm(4, 8),
        nn.SiLU(),
        nn.Conv3d(8, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 6 * 8 * 6, 3),
    )


def counted(batch: int, bf16: bool = False, fake: bool = True) -> dict:
    torch.manual_seed(0)
    if not fake:
        net = tiny_net()
        return M.saved_tensor_bytes(lambda: net(torch.rand(batch, 1, 6, 8, 6)).sum(), list(net.parameters()), bf16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        with M.no_weight_init():
            net = tiny_net()
        return M.saved_tensor_bytes(lambda: net(torch.rand(batch, 1, 6, 8, 6)).sum(), list(net.parameters()), bf16)


def test_fake_count_matches_a_real_forward():
    fake, real = counted(2), counted(2, fake=False)
    assert fake["bytes"] == real["bytes"] > 0
    assert fake["tensors"] == real["tensors"]


def test_activation_bytes_are_linear_in_the_batch():
    one, two, four = counted(1), counted(2), counted(4)
    assert two["bytes"] == 2 * one["bytes"]  # fp32: parameters excluded, nothing else is saved
    assert four["bytes"] == 4 * one["bytes"]
    # by hand: conv1 input 1ch, GN input 8ch, SiLU input 8ch, conv2 input 8ch (fp32) + Linear input (4ch) + the
    # GroupNorm statistics (mean, rstd: 2 x 4 groups) -> all per sample
    voxels = 6 * 8 * 6
    assert one["bytes"] == 4 * (voxels * (1 + 8 + 8 + 8 + 4) + 2 * 4)


def test_bf16_follows_the_cuda_autocast_policy():
    fp32, bf16 = counted(2), counted(2, bf16=True)
    assert bf16["bytes"] < fp32["bytes"]
    assert bf16["bytes_by_dtype"].get("bfloat16", 0) > 0  # convolution / linear operands
    assert bf16["bytes_by_dtype"].get("float32", 0) > 0  # group_norm runs in fp32 (its output feeds SiLU)
    assert nn.functional.group_norm.__name__ == "group_norm"  # the emulation is undone afterwards


def test_persistent_bytes_and_batch_fit():
    stage = {
        "trainable_parameters": 1000,
        "frozen_parameters": 500,
        "ema": True,
        "passes": {
            "step": {
                "bf16": {"fixed_bytes": 0, "per_sample_bytes": M.GIB},
                "fp32": {"fixed_bytes": 0, "per_sample_bytes": 2 * M.GIB},
            }
        },
    }
    parts = M.persistent_bytes(stage)
    assert parts == {"weights": 6000, "gradients": 4000, "adam": 8000, "ema": 6000, "ddp_buckets": 0, "total": 24000}
    assert M.persistent_bytes(stage, ddp=True)["total"] == 28000
    assert M.persistent_bytes(stage, ema=False)["total"] == 18000
    assert M.modelled_peak(stage, "fp32", 3, transient=0.5, ema=False) == 18000 + int(1.5 * 6 * M.GIB)
    capacity = (M.GPU_ALLOWANCE + 24000 + 10 * M.GIB + 16) / (1 - M.GPU_MARGIN)  # room for 10 samples of 1 GiB
    assert M.max_batch(stage, capacity, transient=0.0) == 10
    assert M.max_batch(stage, capacity, transient=1.0) == 5  # 5 x 2 GiB fits, 6 x 2 does not


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_validation_reports_the_agreement(precision):
    stage = {
        "trainable_parameters": 0,
        "frozen_parameters": 0,
        "ema": False,
        "passes": {
            "step": {
                precision: {"fixed_bytes": 0, "per_sample_bytes": 4 * M.GIB},
                "fp32": {"fixed_bytes": 0, "per_sample_bytes": 4 * M.GIB},
            }
        },
    }
    measured = {"stages": {"x": {"rss_gib_after_imports": 1.0, "peak_rss_gib_after_training": 5.5}}}
    out = M.validate({"x": stage}, measured)
    row = out["per_stage"]["x"]
    assert row["model_without_transient_gib"] == 5.0
    assert row["error_without_transient_percent"] == pytest.approx(-9.1, abs=0.05)
    assert out["calibrated_transient_fraction"] == pytest.approx(0.125)
    assert row["error_calibrated_percent"] == pytest.approx(0.0, abs=0.05)
