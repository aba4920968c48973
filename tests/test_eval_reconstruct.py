"""Table 6 study (rows, seeding, code sizes), the manipulation path and its figures, on tiny random models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ldae.evaluation.embed import iterate_batches
from ldae.evaluation.figures import manipulation_montage, reconstruction_examples
from ldae.evaluation.manipulate import choose_subjects, manipulate_scan, shift_codes
from ldae.evaluation.metrics import ImageMetrics
from ldae.evaluation.probes import train_linear_probe
from ldae.evaluation.reconstruct import ROWS, reconstruction_study, summarise_reconstruction

from helpers.tiny_models import tiny_dae, tiny_ldae, volumes

torch.set_num_threads(1)


def records(n):
    return [{"participant_id": f"sub-{i}", "session_id": "ses-M00", "image": str(i)} for i in range(n)]


@pytest.mark.slow
def test_reconstruction_study_rows_and_summary(tmp_path):
    ldae, dae = tiny_ldae(), tiny_dae(shape=(8, 8, 8))
    images = volumes(3, seed=1)
    batches = list(iterate_batches(records(3), lambda p: images[int(p)], batch_size=2))
    per, examples = reconstruction_study(batches, [2, 3], ImageMetrics(), ldae=ldae, dae=dae, seed=0, keep_examples=1)
    assert len(per) == 3 * (1 + 2 * 3 + 2 * 2)  # AE once; LDDIM, LDAE a/b per T; DAE a/b per T
    table = summarise_reconstruction(per)
    assert [tuple(r) for r in table[["Model", "Encoding"]].drop_duplicates().to_numpy()] == ROWS
    assert table.n.eq(3).all() and table.LPIPS.isna().all()  # no LPIPS weights -> n/a
    sizes = dict(zip(zip(table.Model, table.Encoding), table["Code size"]))
    assert sizes[("AutoencoderKL", "-")] == 3 * 8 * 8 * 8
    assert sizes[("LDAE", "(a) y_sem + noise x_T")] == 16
    assert sizes[("LDAE", "(b) y_sem + encoded x_T")] == 16 + 3 * 8 * 8 * 8
    assert sizes[("DAE", "(b) y_sem + encoded x_T")] == 16 + 8 * 8 * 8
    assert per.ssim.between(-1, 1).all() and (per.mse >= 0).all()
    # seeded: the same study gives the same numbers
    again, _ = reconstruction_study(batches, [2, 3], ImageMetrics(), ldae=ldae, dae=dae, seed=0)
    pd.testing.assert_frame_equal(per, again)
    assert examples["input"].shape == (1, 16, 16, 16) and "LDAE (b) y_sem + encoded x_T T=3" in examples
    reconstruction_examples(examples, tmp_path / "examples.png")
    assert (tmp_path / "examples.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        summarise_reconstruction(per.iloc[:0])


def test_reconstruction_summary_has_subject_level_intervals(tmp_path):
    """Table 6 intervals: per (model, encoding, T), the subject-level bootstrap of the mean; written as
    'value [low, high]' in the markdown."""
    from ldae.evaluation.bootstrap import BootstrapSettings, mean_interval
    from ldae.evaluation.tables import write_table

    rng = np.random.default_rng(0)
    rows = [
        {
            "participant_id": f"sub-{s}",
            "session_id": f"ses-M{v:02d}",
            "model": model,
            "encoding": enc,
            "T": t,
            "code_size": 1,
            "ssim": rng.uniform(0.8, 0.9),
            "lpips": float("nan"),
            "mse": rng.uniform(0, 0.01),
        }
        for s in range(6)
        for v in range(2)
        for model, enc in ROWS[:2]
        for t in ([2] if model != "AutoencoderKL" else ["-"])
    ]
    per = pd.DataFrame(rows)
    boot = BootstrapSettings(resamples=300, seed=1)
    table = summarise_reconstruction(per, boot)
    for row in table.itertuples():
        group = per[(per.model == row.Model) & (per.encoding == row.Encoding) & (per["T"].astype(str) == row.T)]
        assert (row.SSIM_ci_low, row.SSIM_ci_high) == mean_interval(group.ssim, group.participant_id, boot)
        assert row.SSIM_ci_low < row.SSIM < row.SSIM_ci_high and row.MSE_ci_low < row.MSE < row.MSE_ci_high
        assert np.isnan(row.LPIPS_ci_low)  # n/a stays n/a
    write_table(
        table,
        tmp_path / "table6_reconstruction.tsv",
        intervals=["SSIM", "LPIPS", "MSE"],
        md_columns=["Model", "Encoding", "T", "SSIM", "LPIPS", "MSE"],
    )
    md = (tmp_path / "table6_reconstruction.md").read_text()
    first = table.iloc[0]
    assert f"{first.SSIM:.4f} [{first.SSIM_ci_low:.4f}, {first.SSIM_ci_high:.4f}]" in md and "| n/a |" in md


def test_manipulation_moves_code_along_probe_direction(tmp_path):
    rng = np.random.default_rng(0)
    y_train = rng.normal(size=(40, 16)).astype(np.float32) * 3 + 5
    labels = (y_train[:, 0] > 5).astype(np.float32)
    probe = train_linear_probe(
        y_train[:30], labels[:30], y_train[30:], labels[30:], "classification", lr=1e-2, epochs=50
    )
    y0 = y_train[0]
    codes = shift_codes(y0, probe, [0, 1, 2], towards_positive=True)
    assert np.allclose(codes[0], y0, atol=1e-4)
    z = probe.scaler.transform(codes)
    step = z[1] - z[0]
    assert np.linalg.norm(step) == pytest.approx(np.sqrt(16), rel=1e-5)  # s * sqrt(D) in z-scored space
    assert np.allclose(step / np.linalg.norm(step), probe.direction(), atol=1e-6)
    p = probe.predict_proba(codes)
    assert p[2] > p[1] > p[0]
    assert probe.predict_proba(shift_codes(y0, probe, [0, 2], towards_positive=False))[1] < p[0]

    ldae = tiny_ldae()
    probe_y = train_linear_probe(
        rng.normal(size=(30, 16)),
        (rng.uniform(size=30) > 0.5).astype(np.float32),
        rng.normal(size=(10, 16)),
        (rng.uniform(size=10) > 0.5).astype(np.float32),
        "classification",
        epochs=5,
    )
    vols, table = manipulate_scan(ldae, volumes(1)[0], probe_y, [0, 1, 3], towards_positive=False, steps=2)
    assert vols.shape == (3, 16, 16, 16) and list(table.scale) == [0, 1, 3]
    assert table.mean_abs_change.iloc[0] == 0 and table.mean_abs_change.iloc[2] > 0
    assert table.p_positive_code.is_monotonic_decreasing
    manipulation_montage(
        vols,
        [0, 1, 3],
        tmp_path / "m.png",
        "test",
        original=volumes(1)[0, 0].numpy(),
        probabilities=table.p_positive_decoded.tolist(),
    )
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_choose_subjects_most_confident_baseline_scan():
    table = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b", "c", "d"],
            "session_id": ["ses-M00", "ses-M06", "ses-M00", "ses-M00", "ses-M00"],
            "months": [0, 6, 0, 0, 0],
            "diagnosis": ["AD", "AD", "AD", "CN", "CN"],
        }
    )
    scores = np.array([0.3, 0.0, 0.1, 0.6, 0.9])  # probability of CN
    chosen = choose_subjects(table, scores)
    assert chosen["AD"].participant_id == "b"  # a's baseline scan is less confident than b's
    assert chosen["CN"].participant_id == "d"
    assert choose_subjects(table, scores, wanted=["a", "c"])["CN"].participant_id == "c"
