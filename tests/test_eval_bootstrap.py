"""Subject-level (cluster) bootstrap: coverage on a known clustered distribution, seeding, the weights' meaning,
settings errors."""

from __future__ import annotations

import numpy as np
import pytest

from ldae.evaluation.bootstrap import (
    BootstrapSettings,
    bootstrap_settings,
    mean_interval,
    resample_weights,
    weighted_intervals,
)


def clustered_sample(rng, subjects=30, true_mean=0.7):
    """Sessions of subjects with a shared subject effect (sd 1) and session noise (sd 0.5); 1-5 sessions each."""
    values, clusters = [], []
    for s in range(subjects):
        effect = rng.normal()
        n = int(rng.integers(1, 6))
        values.extend(true_mean + effect + rng.normal(scale=0.5, size=n))
        clusters.extend([f"sub-{s:03d}"] * n)
    return np.asarray(values), np.asarray(clusters)


def test_cluster_bootstrap_covers_the_true_mean_at_the_nominal_rate():
    """200 seeded repeats: the 95 % interval covers the true mean in 90-99 % of them. Resampling sessions as if
    independent (each session its own cluster) under-covers on the same data - the reason to resample subjects."""
    rng = np.random.default_rng(2026)
    settings = BootstrapSettings(resamples=1000, confidence=0.95, seed=0)
    cluster_hits = row_hits = 0
    for repeat in range(200):
        values, clusters = clustered_sample(rng)
        low, high = mean_interval(values, clusters, BootstrapSettings(1000, 0.95, repeat))
        cluster_hits += low <= 0.7 <= high
        low, high = mean_interval(values, np.arange(len(values)), settings)
        row_hits += low <= 0.7 <= high
    assert 0.90 <= cluster_hits / 200 <= 0.99
    assert row_hits / 200 < 0.85


def test_weights_draw_whole_subjects_and_are_seeded():
    clusters = np.array(["a", "a", "a", "b", "c", "c"])
    settings = BootstrapSettings(resamples=500, seed=3)
    w = resample_weights(clusters, settings)
    assert w.shape == (500, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 1] == w[:, 2]) and np.all(w[:, 4] == w[:, 5])
    assert np.all(w[:, [0, 3, 4]].sum(1) == 3)  # three subjects drawn per resample
    assert np.array_equal(w, resample_weights(clusters, settings))
    assert not np.array_equal(w, resample_weights(clusters, BootstrapSettings(500, seed=4)))
    # the mean interval is the weighted statistic's interval; a constant has a zero-width interval
    values = np.array([1.0, 2.0, 3.0, 10.0, 4.0, 6.0])
    expected = weighted_intervals(clusters, lambda wt: {"m": wt @ values / wt.sum(1)}, settings)["m"]
    assert mean_interval(values, clusters, settings) == expected
    assert mean_interval(np.full(6, 2.5), clusters, settings) == (2.5, 2.5)
    assert np.isnan(mean_interval(np.full(6, np.nan), clusters, settings)[0])


def test_settings_from_config():
    assert bootstrap_settings({"resamples": 50}, seed=7) == BootstrapSettings(50, 0.95, 7)
    assert "95% subject-level bootstrap" in bootstrap_settings(None).describe()
    with pytest.raises(ValueError, match="evaluation.bootstrap.resamples"):
        bootstrap_settings({"resamples": 0})
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_settings({"confidence": 95})
    with pytest.raises(ValueError, match="unknown key"):
        bootstrap_settings({"samples": 10})
