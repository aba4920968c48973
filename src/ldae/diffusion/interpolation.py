"""Interpolation maths (paper Fig. 8): LERP on y_sem, SLERP on x_T, and the mixing weight from visit dates."""

from __future__ import annotations

import torch

__all__ = ["lerp", "slerp", "alpha_from_months"]


def _alpha(alpha, ref: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=ref.dtype, device=ref.device)
    if a.ndim == 1:  # one alpha per sample
        a = a.reshape(-1, *([1] * (ref.ndim - 1)))
    return a


def lerp(a: torch.Tensor, b: torch.Tensor, alpha) -> torch.Tensor:
    """``(1 - alpha) a + alpha b``; ``alpha`` a scalar or one value per sample (first dimension)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    al = _alpha(alpha, a)
    return (1 - al) * a + al * b


def slerp(a: torch.Tensor, b: torch.Tensor, alpha, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation per sample (first dimension), the angle from the cosine of the flattened vectors:
    ``sin((1-alpha) th) / sin th * a + sin(alpha th) / sin th * b``. Falls back to :func:`lerp` where the vectors are
    (anti-)parallel within ``eps`` (``sin th`` ~ 0) or zero.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 1:
        return slerp(a[None], b[None], alpha, eps)[0]
    af, bf = a.flatten(1).double(), b.flatten(1).double()
    na, nb = af.norm(dim=1), bf.norm(dim=1)
    cos = (af * bf).sum(1) / (na * nb).clamp_min(1e-30)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    al = torch.as_tensor(alpha, dtype=torch.float64, device=a.device).expand(a.shape[0])
    safe = (sin > eps) & (na > 0) & (nb > 0)
    sin_s = torch.where(safe, sin, torch.ones_like(sin))
    wa = torch.where(safe, torch.sin((1 - al) * theta) / sin_s, 1 - al)
    wb = torch.where(safe, torch.sin(al * theta) / sin_s, al)
    out = wa[:, None] * af + wb[:, None] * bf
    return out.reshape(a.shape).to(a.dtype)


def alpha_from_months(start, target, end) -> float | torch.Tensor:
    """Relative position ``(target - start) / (end - start)`` of a visit between two others (months or dates)."""
    s, t, e = (torch.as_tensor(v, dtype=torch.float64) for v in (start, target, end))
    if torch.any(e <= s):
        raise ValueError("end visit must come after the start visit")
    if torch.any((t < s) | (t > e)):
        raise ValueError("target visit must lie between start and end")
    a = (t - s) / (e - s)
    return float(a) if a.ndim == 0 else a
