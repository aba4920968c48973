"""Our linear-probe file: one fitted :class:`~ldae.evaluation.probes.LinearProbe` as plain tensors.

A ``torch.save`` dict read back with ``weights_only=True`` (format ``ldae-linear-probe/1``)::

    format, task ("classification" | "regression"), positive_class (e.g. "CN"), labels, origin   strings
    feature_mean, feature_std   (D,) float64: the z-scoring of y_sem (probe-training statistics)
    weight (1, D), bias (1,)    float32: the linear layer on z-scored y_sem
    target_offset, target_scale floats: regression prediction = output * scale + offset (0 / 1 for classification)

``ldae manipulate --probe-file`` moves y_sem along such a probe instead of training one. The authors' released
AD-vs-CN probe (``disease_classifier.ckpt`` + ``semantic_mean.pt`` + ``semantic_std.pt``) becomes one with
:func:`write_official_probe` (label AD = 0, CN = 1, as ours).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from ldae.files import atomic_output
from ldae.models.official_encoder import PROBE_FORMAT, probe_from_official

from .probes import LinearProbe

__all__ = ["probe_state", "probe_from_state", "save_probe", "load_probe", "write_official_probe"]

_TENSORS = {"feature_mean": 1, "feature_std": 1, "weight": 2, "bias": 1}


def probe_state(probe: LinearProbe, positive_class: str = "CN", origin: str = "") -> dict[str, Any]:
    """The probe-file dict of a fitted probe."""
    scaler = probe.scaler
    return {
        "format": PROBE_FORMAT,
        "task": probe.task,
        "positive_class": str(positive_class),
        "labels": f"positive class {positive_class} = 1",
        "origin": origin,
        "feature_mean": torch.as_tensor(np.asarray(scaler.mean_, dtype=np.float64)),
        "feature_std": torch.as_tensor(np.asarray(scaler.scale_, dtype=np.float64)),
        "weight": probe.layer.weight.detach().to(torch.float32).clone(),
        "bias": probe.layer.bias.detach().to(torch.float32).clone(),
        "target_offset": float(probe.y_offset),
        "target_scale": float(probe.y_scale),
    }


def _scaler(mean: torch.Tensor, std: torch.Tensor) -> StandardScaler:
    """A fitted StandardScaler with the given statistics (what ``transform`` uses: ``(x - mean_) / scale_``)."""
    scaler = StandardScaler()
    scaler.mean_ = mean.numpy().astype(np.float64)
    scaler.scale_ = std.numpy().astype(np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = int(mean.numel())
    scaler.n_samples_seen_ = np.int64(0)  # unknown (the statistics were given, not fitted here)
    return scaler


def _checked(state: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(state, Mapping) or state.get("format") != PROBE_FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{source}: not a probe file of format {PROBE_FORMAT!r} (found {found!r}); write one with "
            "ldae.evaluation.probe_file.save_probe or write_official_probe"
        )
    for key, ndim in _TENSORS.items():
        if not isinstance(state.get(key), torch.Tensor) or state[key].ndim != ndim:
            raise ValueError(f"{source}: '{key}' must be a {ndim}-D tensor")
    dim = state["weight"].shape[1]
    shapes = {k: list(state[k].shape) for k in _TENSORS}
    if shapes != {"feature_mean": [dim], "feature_std": [dim], "weight": [1, dim], "bias": [1]}:
        raise ValueError(f"{source}: inconsistent shapes {shapes} (expected D = {dim} inputs, one output)")
    if state.get("task") not in ("classification", "regression"):
        raise ValueError(f"{source}: 'task' must be classification or regression, got {state.get('task')!r}")
    return state


def probe_from_state(
    state: Mapping[str, Any], source: str = "probe state", positive_class: str | None = None
) -> LinearProbe:
    """The :class:`LinearProbe` of a probe-file dict; ``positive_class`` given: it must be the file's."""
    state = _checked(state, source)
    if positive_class is not None and state["positive_class"] != positive_class:
        raise ValueError(
            f"{source}: the probe's positive class is {state['positive_class']!r}, the config's "
            f"evaluation.probe.positive_class is {positive_class!r}: make them agree"
        )
    layer = torch.nn.Linear(state["weight"].shape[1], 1)
    with torch.no_grad():
        layer.weight.copy_(state["weight"])
        layer.bias.copy_(state["bias"])
    return LinearProbe(
        _scaler(state["feature_mean"], state["feature_std"]),
        layer,
        state["task"],
        float(state["target_offset"]),
        float(state["target_scale"]),
    )


def save_probe(probe: LinearProbe, path: str | os.PathLike, positive_class: str = "CN", origin: str = "") -> None:
    with atomic_output(path) as tmp:
        torch.save(probe_state(probe, positive_class, origin), tmp)


def load_probe(path: str | os.PathLike, positive_class: str | None = None) -> LinearProbe:
    """A probe file, or the folder holding one (``probe.pt``, what rule import_official writes)."""
    from ldae.models.io import probe_file, read_tensor_file

    path = probe_file(path)
    return probe_from_state(read_tensor_file(path, "a probe file"), os.fspath(path), positive_class)


def write_official_probe(
    classifier: str | os.PathLike, mean: str | os.PathLike, std: str | os.PathLike, out: str | os.PathLike
) -> LinearProbe:
    """Our probe file ``out`` from the authors' ``disease_classifier.ckpt`` (Lightning checkpoint or plain state
    dict of a Linear(768 -> 1)), ``semantic_mean.pt`` and ``semantic_std.pt``; returns the probe."""
    from ldae.models.io import read_tensor_file

    what = "the authors' AD-vs-CN probe (a Linear(768 -> 1) checkpoint)"
    state = probe_from_official(
        read_tensor_file(classifier, what),
        read_tensor_file(mean, "the authors' y_sem z-score mean (semantic_mean.pt)"),
        read_tensor_file(std, "the authors' y_sem z-score std (semantic_std.pt)"),
        os.fspath(classifier),
    )
    with atomic_output(out) as tmp:
        torch.save(state, tmp)
    return probe_from_state(state, os.fspath(out))
