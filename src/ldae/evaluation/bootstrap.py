"""Subject-level (cluster) bootstrap intervals for every number reported from the test split.

Sessions of one subject are not independent (several visits of the same brain), so the unit that is resampled is
the SUBJECT: each resample draws as many subjects as the test split holds, with replacement, and takes all their
sessions (a subject drawn twice counts twice). The interval is the percentile interval of the statistic over the
resamples (default 95 %, 1000 resamples; config ``evaluation.bootstrap``), seeded from ``evaluation.seed``.

What it covers: the uncertainty from WHICH test subjects were drawn, for a fixed trained model (probes and networks
are not retrained per resample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapSettings", "bootstrap_settings", "resample_weights", "weighted_intervals", "mean_interval"]


@dataclass(frozen=True)
class BootstrapSettings:
    """How many resamples, the interval's coverage, the seed."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def describe(self) -> str:
        return (
            f"{self.confidence:.0%} subject-level bootstrap interval (percentile, {self.resamples} resamples of "
            f"the test subjects, seed {self.seed})"
        )


def bootstrap_settings(
    section: Mapping | None, seed: int = 0, where: str = "evaluation.bootstrap"
) -> BootstrapSettings:
    """Settings from the config section ``{resamples, confidence}``; a clear error on bad values."""
    from ldae import verbs

    values = verbs.resolve_config(verbs.schema_defaults("evaluation.bootstrap"), section, where)
    resamples, confidence = int(values["resamples"]), float(values["confidence"])
    if resamples < 1:
        raise ValueError(f"{where}.resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{where}.confidence must lie in (0, 1), got {confidence}")
    return BootstrapSettings(resamples, confidence, int(seed))


def _groups(clusters: Sequence) -> tuple[np.ndarray, int]:
    """Cluster code (0..k-1) of every row and the number of clusters."""
    if len(clusters) == 0:
        return np.zeros(0, dtype=np.int64), 0
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1


def resample_weights(clusters: Sequence, settings: BootstrapSettings) -> np.ndarray:
    """``(resamples, n)``: how often each of the n rows is drawn in each resample - the number of times its cluster
    (subject) is drawn, when k clusters are drawn with replacement from the k present."""
    codes, k = _groups(clusters)
    rng = np.random.default_rng(settings.seed)
    if k == 0:
        return np.zeros((settings.resamples, 0))
    draws = rng.integers(0, k, size=(settings.resamples, k))  # k subjects drawn with replacement, per resample
    offsets = np.arange(settings.resamples)[:, None] * k
    counts = np.bincount((draws + offsets).ravel(), minlength=settings.resamples * k).reshape(settings.resamples, k)
    return counts[:, codes].astype(np.float64)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def weighted_intervals(
    clusters: Sequence, statistic: Callable[[np.ndarray], Mapping[str, np.ndarray]], settings: BootstrapSettings
) -> dict[str, tuple[float, float]]:
    """Intervals of every value of ``statistic(weights)``: given the ``(resamples, n)`` row weights of
    :func:`resample_weights` it returns, per name, the statistic of each resample ``(resamples,)`` (the resampled
    data set = every row repeated ``weight`` times). A resample where a value is undefined (NaN, e.g. ROC-AUC with
    one class) is left out of that value's percentiles."""
    weights = resample_weights(clusters, settings)
    return {name: _percentiles(values, settings.confidence) for name, values in statistic(weights).items()}


def mean_interval(values: Sequence[float], clusters: Sequence, settings: BootstrapSettings) -> tuple[float, float]:
    """Interval of the mean of ``values`` (one per row; rows grouped by ``clusters``). NaN values are dropped
    first; (NaN, NaN) when nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if not keep.any():
        return float("nan"), float("nan")
    kept = values[keep]
    return weighted_intervals(
        np.asarray(clusters, dtype=object)[keep], lambda w: {"mean": w @ kept / w.sum(1)}, settings
    )["mean"]
