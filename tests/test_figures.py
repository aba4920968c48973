"""Evaluation figures: shared intensity windows, labels and colour bars (figures are inspected before saving)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ldae.evaluation import figures


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figure each plotting call would save, instead of a PNG."""
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    yield saved
    for fig in saved:
        figures.plt.close(fig)


def _volume(seed: int = 0, shape=(12, 14, 10)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(shape, np.float32)
    v[2:-2, 2:-2, 2:-2] = 0.5 + 0.05 * rng.standard_normal((shape[0] - 4, shape[1] - 4, shape[2] - 4))
    return v


def _grey_limits(fig) -> set[tuple[float, float]]:
    return {
        tuple(round(x, 6) for x in im.get_clim())
        for ax in fig.axes
        for im in ax.get_images()
        if im.get_cmap().name == "gray"
    }


def test_intensity_window_ignores_a_few_bright_voxels():
    v = _volume()
    v[5, 5, 5] = 40.0  # one hot voxel must not wash the brain out
    low, high = figures.intensity_window([v])
    assert low == 0.0 and 0.55 < high < 0.8
    low, high = figures.intensity_window([v - 0.3])  # negative values widen the window downwards
    assert low < -0.25
    assert figures.intensity_window([np.zeros((3, 3, 3))]) == (0.0, 1.0)


def test_reconstruction_rows_group_by_table6_row_and_sort_t():
    examples = {"input": _volume()[None], "AutoencoderKL - T=-": _volume(1)[None]}
    for t in (100, 10, 20):
        examples[f"LDAE (b) y_sem + encoded x_T T={t}"] = _volume(t)[None]
    rows, steps = figures._reconstruction_rows(examples)
    assert list(rows) == ["AutoencoderKL", "LDAE (b) y_sem + encoded x_T"]
    assert steps == ["10", "20", "100"] and list(rows["AutoencoderKL"]) == ["-"]


def test_reconstruction_examples_share_one_stated_window_per_row(captured):
    x = _volume()
    examples = {"input": x[None], "AutoencoderKL - T=-": (x * 0.9)[None]}
    for t in (10, 20):
        examples[f"LDAE (b) y_sem + encoded x_T T={t}"] = (x * 1.5)[None]  # brighter: its row's window is wider
        examples[f"DAE (b) y_sem + encoded x_T T={t}"] = (x[::2, ::2, ::2] * 0.8)[None]
    figures.reconstruction_examples(examples, "unused.png")
    (fig,) = captured
    axes = np.array(fig.axes).reshape(3, 3)
    for row in axes:
        assert len({tuple(im.get_clim()) for ax in row for im in ax.get_images()}) == 1  # one window per row
    labels = [row[0].get_ylabel() for row in axes]
    lo, hi = axes[1, 0].get_images()[0].get_clim()
    assert f"window [{lo:.2f}, {hi:.2f}]" in labels[1] and hi > 0.7  # stated, and widened by the brighter output
    assert "at 6x7x5 voxels" in labels[2]  # the DAE's own resolution is said
    assert [ax.get_title() for ax in axes[1]] == ["input", "T = 10", "T = 20"]
    assert axes[0, 1].get_title() == "reconstruction" and not axes[0, 2].get_images()


def test_manipulation_montage_has_colour_bar_and_probabilities(captured):
    vols = np.stack([_volume() + 0.02 * s for s in range(3)])
    figures.manipulation_montage(
        vols,
        [0, 1, 2],
        "unused.png",
        "CN scan moved towards AD",
        original=_volume(),
        probabilities=[0.9, 0.6, 0.2],
        probability_label="p(CN)",
    )
    (fig,) = captured
    assert len(_grey_limits(fig)) == 1  # input and every decoded scan in one window
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "decoded(s = 0)" in bars[0].get_ylabel()
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "s = 1\np(CN) = 0.60" in labels and "input scan" in labels
    assert "one intensity window" in fig.get_suptitle()


def test_figure8_example_has_window_and_difference(captured):
    results = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b"],
            "time_gap": [12, 24, 24],
            "prediction_gap": [6, 12, 6],
            "alpha": [0.25, 0.5, 0.75],
            "ssim": [0.9, 0.8, 0.85],
            "mse": [0.01, 0.02, 0.015],
            "nearest_ssim": [0.88, 0.8, 0.8],
            "nearest_mse": [0.01, 0.02, 0.02],
        }
    )
    x = _volume()
    figures.figure8_interpolation(results, {"start": x, "target": x, "generated": x * 1.1, "end": x}, "unused.png")
    (fig,) = captured
    assert len(_grey_limits(fig)) == 1
    titles = [ax.get_title() for ax in fig.axes]
    assert "generated - real target" in titles
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
