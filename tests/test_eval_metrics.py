"""Image metrics against independent implementations; LPIPS only from local weights and seeded; table writers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from ldae.evaluation.metrics import LPIPS, ImageMetrics, mse, ssim
from ldae.evaluation.tables import format_value, markdown_table, read_table, write_table

torch.set_num_threads(1)


def pair(shape=(20, 24, 18), seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, *shape, generator=g)
    x = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1, 1, 1))).float()  # image-like
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def ssim_reference(a: np.ndarray, b: np.ndarray, kernel_size: int, sigma: float) -> float:
    """Wang et al. (2004) SSIM written independently with scipy: sampled, normalised Gaussian window of
    ``kernel_size`` taps, population (co)variances, mean over the 'valid' region (no padding)."""
    r = kernel_size // 2
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    w = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]

    def f(v):
        return ndimage.correlate(v, w, mode="constant")[r:-r, r:-r, r:-r]

    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def test_ssim_matches_scikit_image_gaussian_window():
    """scikit-image's Gaussian SSIM fixes an 11-tap window (truncate 3.5, sigma 1.5): compare at that setting."""
    x, y = pair()
    ours = ssim(y, x, kernel_size=11, sigma=1.5)
    for i in range(2):
        ref = structural_similarity(
            x[i, 0].numpy().astype(np.float64),
            y[i, 0].numpy().astype(np.float64),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-4)  # MONAI computes in float32


def test_ssim_paper_setting_matches_independent_implementation():
    """The paper's setting (kernel 3, sigma 1.5, data range 1, whole volume) against the scipy reference."""
    x, y = pair(seed=1)
    ours = ssim(y, x)  # defaults = the paper's setting
    for i in range(2):
        ref = ssim_reference(y[i, 0].numpy(), x[i, 0].numpy(), 3, 1.5)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-4)  # MONAI computes in float32
    assert ssim_reference(y[0, 0].numpy(), x[0, 0].numpy(), 11, 1.5) == pytest.approx(
        float(ssim(y, x, kernel_size=11)[0]), abs=1e-5
    )
    assert float(ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-6)
    # worse images score lower
    _, y_bad = pair(seed=1, noise=0.3)
    assert (ssim(y_bad, x) < ours).all()


def test_mse_and_batch_metrics():
    x, y = pair(seed=2)
    assert torch.allclose(mse(y, x), ((y - x) ** 2).flatten(1).mean(1), atol=1e-7)
    rows = ImageMetrics()(y * 2.0, x)  # predictions are clamped to the data range [0, 1]
    assert rows[0]["mse"] == pytest.approx(float(mse((y * 2).clamp(0, 1), x)[0]), rel=1e-6)
    assert math.isnan(rows[0]["lpips"])  # no LPIPS configured -> n/a
    with pytest.raises(ValueError):
        ssim(x, x[:, :, :-1])


def test_lpips_na_without_local_weights(tmp_path):
    lp = LPIPS(None)
    assert not lp.available
    x, y = pair()
    assert torch.isnan(lp(x, y)).all()
    assert not LPIPS(tmp_path / "missing.pt").available


def test_lpips_local_weights_seeded(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "sq.pt")
    lp = LPIPS(tmp_path / "sq.pt", seed=3)
    assert lp.available
    x, y = pair(shape=(32, 32, 32), seed=4)
    a, b = lp(y, x), lp(y, x)
    assert torch.equal(a, b)  # the random 50% slice draw is seeded
    assert (a > 0).all()
    assert lp(x, x).abs().max() < 1e-6
    state = torch.random.get_rng_state()
    lp(y, x)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is left alone
    rows = ImageMetrics(lp)(y, x)
    assert rows[0]["lpips"] == pytest.approx(float(a[0]), rel=1e-6)


def test_table_writers(tmp_path):
    frame = pd.DataFrame(
        {"Model": ["LDAE", "DAE"], "SSIM": [0.96123456, 0.5], "LPIPS": [float("nan"), None], "n": [10, 20000]}
    )
    write_table(frame, tmp_path / "table6_reconstruction.tsv", notes=["a note"])
    tsv = (tmp_path / "table6_reconstruction.tsv").read_text()
    assert "n/a" in tsv and "0.96123456" in tsv
    md = (tmp_path / "table6_reconstruction.md").read_text()
    assert md.startswith("### Table 6") and "| LDAE | 0.9612 | n/a | 10 |" in md and "20,000" in md
    assert "- a note" in md
    back = read_table(tmp_path / "table6_reconstruction.tsv")
    assert back.LPIPS.isna().all() and back.SSIM[0] == pytest.approx(0.96123456)
    assert (
        format_value(0.00012345) == "1.234e-04"
        and format_value(None) == "n/a"
        and format_value(3.0) == "3.0000"
        and format_value(2.0e4) == "20,000"
    )
    assert markdown_table(pd.DataFrame({"a": ["x|y"]})).endswith("| x\\|y |")
