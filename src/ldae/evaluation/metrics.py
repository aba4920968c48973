"""Image metrics of Tables 5, 6 and Figure 8: SSIM (MONAI), MSE (MONAI) and LPIPS (MONAI PerceptualLoss).

Definitions follow the authors' code (paper-notes.md, "Evaluation"):
  * SSIM: 3-D, data range 1, Gaussian kernel of size 3 and sigma 1.5, averaged over the whole volume
    (``monai.metrics.SSIMMetric``; tests/test_eval_metrics.py checks it against scikit-image and an independent
    scipy implementation). Figure 8 passes ``kernel_size`` 4, as the authors' interpolation script
    (``evaluation.interpolation.ssim_kernel``); Table 6 and the training's validation keep 3.
  * MSE: voxel mean of the squared difference (``monai.metrics.MSEMetric``).
  * LPIPS: MONAI's ``PerceptualLoss`` with SqueezeNet LPIPS in "fake 3-D" mode - the 2-D LPIPS over a random 50% of
    the slices along each of the three axes, summed over the axes. The slice choice is random: every call here is
    seeded (``seed`` + sample index), so a table is reproducible. Weights come only from a LOCAL file
    (:func:`ldae.models.autoencoder.build_perceptual_loss`); without one the metric is unavailable and the tables
    say "n/a" - never a number from random weights.

All functions take ``(B, 1, X, Y, Z)`` tensors with intensities in [0, 1] and return one value per sample.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger("ldae.evaluation")

__all__ = ["SSIM_KERNEL_SIZE", "SSIM_SIGMA", "ssim", "mse", "LPIPS", "ImageMetrics"]

SSIM_KERNEL_SIZE = 3
SSIM_SIGMA = 1.5


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.ndim != 5:
        raise ValueError(f"expected (B, C, X, Y, Z) volumes, got {tuple(pred.shape)}")


@torch.no_grad()
def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    kernel_size: int = SSIM_KERNEL_SIZE,
    sigma: float = SSIM_SIGMA,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Per-sample 3-D SSIM ``(B,)`` with a Gaussian window (``monai.metrics.SSIMMetric``)."""
    from monai.metrics import SSIMMetric

    _check(pred, target)
    metric = SSIMMetric(
        spatial_dims=3,
        data_range=float(data_range),
        kernel_type="gaussian",
        win_size=int(kernel_size),
        kernel_sigma=float(sigma),
        reduction="none",
    )
    return metric(pred.float(), target.float()).reshape(pred.shape[0], -1).mean(1).cpu()


@torch.no_grad()
def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error ``(B,)`` (``monai.metrics.MSEMetric``)."""
    from monai.metrics import MSEMetric

    _check(pred, target)
    metric = MSEMetric(reduction="none")
    return metric(pred.float(), target.float()).reshape(pred.shape[0], -1).mean(1).cpu()


class LPIPS:
    """Seeded fake-3-D SqueezeNet LPIPS (see module docstring). ``available`` is False without local weights;
    calling it then returns NaN per sample (tables write NaN as "n/a")."""

    def __init__(
        self,
        weights_path: str | os.PathLike | None,
        cfg: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self.loss = None
        if weights_path and str(weights_path).strip() and os.path.isfile(os.fspath(weights_path)):
            from ldae.models.autoencoder import build_perceptual_loss

            cfg = {"perceptual_network": "squeeze", "perceptual_fake_3d_ratio": 0.5, **dict(cfg or {})}
            self.loss = build_perceptual_loss(cfg, weights_path)
            if self.loss is not None:
                self.loss = self.loss.to(self.device)
        elif weights_path:
            log.warning("LPIPS weights %r not found: the LPIPS columns say n/a", weights_path)

    @property
    def available(self) -> bool:
        return self.loss is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Per-sample LPIPS ``(B,)``; sample ``i`` uses the slice draw of seed ``seed + offset + i``."""
        _check(pred, target)
        if self.loss is None:
            return torch.full((pred.shape[0],), float("nan"))
        values = []
        for i in range(pred.shape[0]):
            with torch.random.fork_rng(devices=[]):  # MONAI draws the slices with the global CPU generator
                torch.manual_seed(self.seed + offset + i)
                p, t = pred[i : i + 1].to(self.device).float(), target[i : i + 1].to(self.device).float()
                values.append(float(self.loss(p, t)))
        return torch.tensor(values)


class ImageMetrics:
    """SSIM, LPIPS and MSE of a batch against its reference, as a list of row dicts."""

    def __init__(
        self, lpips: LPIPS | None = None, kernel_size: int = SSIM_KERNEL_SIZE, sigma: float = SSIM_SIGMA
    ) -> None:
        self.lpips = lpips
        self.kernel_size, self.sigma = kernel_size, sigma

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, offset: int = 0) -> list[dict[str, float]]:
        pred, target = pred.detach().float().cpu().clamp(0, 1), target.detach().float().cpu()
        s = ssim(pred, target, self.kernel_size, self.sigma)
        m = mse(pred, target)
        lp = self.lpips(pred, target, offset) if self.lpips is not None else torch.full_like(s, float("nan"))
        return [{"ssim": float(a), "lpips": float(b), "mse": float(c)} for a, b, c in zip(s, lp, m)]
