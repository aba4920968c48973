"""Interpolation study: triplet enumeration on a toy visit schedule (count, alphas, gaps), stratification, the
LERP/SLERP decode path on a tiny LDAE, and the Figure-8 plot."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest
import torch

from ldae.evaluation.figures import figure8_interpolation
from ldae.evaluation.interpolate import enumerate_triplets, interpolation_study, stratify
from ldae.evaluation.metrics import ssim

from helpers.tiny_models import tiny_ldae, volumes

torch.set_num_threads(1)

SCHEDULE = {"sub-A": [0, 6, 12, 24], "sub-B": [0, 12], "sub-C": [0, 6, 12, 18, 24], "sub-D": [36, 0, 12]}


def visits(schedule=SCHEDULE):
    return pd.DataFrame(
        [
            {"participant_id": p, "session_id": f"ses-M{m:02d}", "months": m}
            for p, months in schedule.items()
            for m in months
        ]
    )


def test_triplet_count_and_alphas():
    t = enumerate_triplets(visits())
    assert len(t) == comb(4, 3) + comb(5, 3) + 1  # sub-B has two visits only
    assert "sub-B" not in set(t.participant_id)
    a = t[t.participant_id == "sub-A"].set_index(["start_months", "target_months", "end_months"])
    assert sorted(a.index) == [(0, 6, 12), (0, 6, 24), (0, 12, 24), (6, 12, 24)]
    assert a.loc[(0, 6, 24), "alpha"] == pytest.approx(0.25)
    assert a.loc[(6, 12, 24), "alpha"] == pytest.approx(1 / 3)
    assert a.loc[(0, 12, 24), "alpha"] == pytest.approx(0.5)
    assert list(a.loc[[(0, 6, 12), (0, 6, 24), (0, 12, 24), (6, 12, 24)], "time_gap"]) == [12, 24, 24, 18]
    assert list(a.loc[[(0, 6, 12), (0, 6, 24), (0, 12, 24), (6, 12, 24)], "prediction_gap"]) == [6, 6, 12, 6]
    d = t[t.participant_id == "sub-D"].iloc[0]  # unsorted visits are ordered by month
    assert (d.start_months, d.target_months, d.end_months, d.alpha) == (0, 12, 36, pytest.approx(1 / 3))
    assert (t.start_months < t.target_months).all() and (t.target_months < t.end_months).all()
    assert ((t.alpha > 0) & (t.alpha < 1)).all()
    assert (t.session_id if "session_id" in t else t.target_session).str.startswith("ses-M").all()


def test_subject_and_triplet_caps_are_seeded():
    one = enumerate_triplets(visits(), max_subjects=1, seed=3)
    assert one.participant_id.nunique() == 1
    assert one.equals(enumerate_triplets(visits(), max_subjects=1, seed=3))
    capped = enumerate_triplets(visits(), max_triplets=5, seed=0)
    assert len(capped) == 5 and capped.equals(enumerate_triplets(visits(), max_triplets=5, seed=0))
    with pytest.raises(ValueError):
        enumerate_triplets(pd.concat([visits(), visits().iloc[:1]]))  # two sessions at one month


def test_stratify_levels_and_means():
    t = enumerate_triplets(visits())
    t["ssim"] = 1.0 - t.time_gap / 100
    t["mse"] = t.time_gap / 1000
    t["nearest_ssim"], t["nearest_mse"] = t.ssim - 0.1, t.mse * 2
    table = stratify(t)
    assert table.loc[table.stratum == "all", "n"].item() == len(t)
    gaps = table[table.stratum == "time gap (months)"]
    assert list(gaps.level) == [str(g) for g in sorted(t.time_gap.unique().astype(int))]
    assert gaps.ssim.is_monotonic_decreasing  # planted: SSIM falls with the gap
    assert gaps.n.sum() == len(t)
    pos = table[table.stratum == "relative position"]
    assert pos.n.sum() == len(t) and set(pos.level) <= {"[0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1]"}
    assert table[table.stratum == "prediction gap (months)"].level.astype(float).is_monotonic_increasing
    assert np.allclose(table.ssim_gain, 0.1)  # the paired gain over the nearest endpoint


def test_stratum_intervals_are_subject_level():
    from ldae.evaluation.bootstrap import BootstrapSettings, mean_interval

    t = enumerate_triplets(visits({f"sub-{i}": [0, 6, 12, 18, 24] for i in range(8)}))
    rng = np.random.default_rng(0)
    effect = {p: rng.normal(scale=0.02) for p in t.participant_id.unique()}
    t["ssim"] = 0.9 + t.participant_id.map(effect) + rng.normal(scale=0.005, size=len(t))
    t["mse"], t["nearest_ssim"], t["nearest_mse"] = 0.002, t.ssim - 0.01, 0.004
    boot = BootstrapSettings(resamples=400, seed=0)
    table = stratify(t, bootstrap=boot)
    everything = table[table.stratum == "all"].iloc[0]
    assert (everything.ssim_ci_low, everything.ssim_ci_high) == mean_interval(t.ssim, t.participant_id, boot)
    assert everything.ssim_ci_low < everything.ssim < everything.ssim_ci_high
    assert everything.mse_ci_low == pytest.approx(0.002) and everything.mse_ci_high == pytest.approx(0.002)
    six = table[(table.stratum == "time gap (months)") & (table.level == "12")].iloc[0]
    sel = t[t.time_gap == 12]
    assert (six.ssim_ci_low, six.ssim_ci_high) == mean_interval(sel.ssim, sel.participant_id, boot)
    assert six.ssim_gain_ci_low == pytest.approx(0.01) and six.ssim_gain_ci_high == pytest.approx(0.01)
    assert {"ssim_ci_low", "nearest_ssim_ci_high"} <= set(table.columns)
    assert "ssim_ci_low" not in stratify(t).columns  # intervals only when asked


def test_interpolation_study_on_tiny_ldae(tmp_path):
    ldae = tiny_ldae()
    v = visits({"sub-A": [0, 6, 12], "sub-C": [0, 6, 12, 24]})
    images = volumes(len(v), seed=5)
    keys = list(zip(v.participant_id, v.session_id))
    y = dict(zip(keys, ldae.semantic(images)))
    z = dict(zip(keys, ldae.latent(images)))
    x_T = {k: ldae.invert(z[k][None], y[k][None], 3)[0] for k in keys}
    triplets = enumerate_triplets(v)
    results, example = interpolation_study(ldae, triplets, y, x_T, z, steps=3, batch_size=3)
    assert len(results) == len(triplets) == 1 + 4
    # Figure 8 SSIM: the authors' interpolation window 4 (Table 6: 3)
    k3, _ = interpolation_study(ldae, triplets.iloc[:1], y, x_T, z, steps=3, ssim_kernel=3)
    reference = ldae.decode(z[(triplets.participant_id[0], triplets.target_session[0])][None]).clamp(0, 1)
    generated = torch.from_numpy(example["generated"])[None, None]
    assert results.ssim[0] == pytest.approx(float(ssim(generated, reference.cpu(), kernel_size=4)[0]), abs=1e-6)
    assert k3.ssim[0] == pytest.approx(float(ssim(generated, reference.cpu(), kernel_size=3)[0]), abs=1e-6)
    assert k3.ssim[0] != results.ssim[0] and k3.mse[0] == pytest.approx(results.mse[0], rel=1e-5)
    assert results[["ssim", "mse", "nearest_ssim", "nearest_mse"]].notna().all().all()
    assert set(example) == {"start", "target", "generated", "end"} and example["generated"].shape == (16, 16, 16)
    # alpha -> endpoint: interpolating with alpha = 0 reproduces the start's decoding exactly
    first = triplets.iloc[[0]].assign(alpha=0.0)
    r0, ex0 = interpolation_study(ldae, first, y, x_T, z, steps=3)
    start_key = (first.participant_id.iloc[0], first.start_session.iloc[0])
    direct = ldae.decode(ldae.sample(x_T[start_key][None], y[start_key][None], 3)).clamp(0, 1)[0, 0]
    assert np.allclose(ex0["generated"], direct.numpy(), atol=1e-5)
    figure8_interpolation(results, example, tmp_path / "figure8.png")
    assert (tmp_path / "figure8.png").stat().st_size > 1000
