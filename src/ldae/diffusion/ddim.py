"""Deterministic DDIM (eta = 0) decoding and inversion ("stochastic encoding"), with optional PDAE guidance.

Time grid: ``num_steps`` timesteps ``t_1 < ... < t_S`` = ``linspace(0, T-1, S).round()`` (``[T-1]`` for S = 1),
plus the clean end point ``abar = 1``. Decoding walks ``t_S -> ... -> t_1 -> x0``; inversion walks the same grid
upwards, so a round trip is limited only by the ODE discretisation. One DDIM step from noise level ``s`` to ``t``:
``x_t = sqrt(abar_t) * x0_hat + sqrt(1 - abar_t) * eps``, ``x0_hat = (x_s - sqrt(1 - abar_s) eps) / sqrt(abar_s)``,
``eps = eps_fn(x_s, s)``; inversion's first step (from ``abar = 1``) evaluates the model at ``t_1``.
(MONAI's ``DDIMScheduler`` is not used for stepping: its ``step`` assumes a spacing of ``T // S`` that does not match
its own rounded ``linspace`` grid, and its ``reversed_step`` is not the inverse of ``step``.)

Guidance with the LDAE estimator (:func:`guided_eps_fn`):
  * ``"score"`` (PDAE paper, authors' code): ``eps_hat - sqrt(1 - abar_t) * G`` (classifier-guided DDIM);
  * ``"pdae"``: ``eps_hat + c_t * G``, exactly the shift the PDAE loss trains (see :mod:`ldae.diffusion.pdae`); the
    two differ by the factor ``r_t`` on the shift, ~1 except for the smallest timesteps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import DiffusionSchedule, extract

__all__ = ["ddim_timesteps", "ddim_sample", "ddim_invert", "guided_eps_fn", "GUIDANCE_MODES"]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GUIDANCE_MODES = ("score", "pdae", "none")


def ddim_timesteps(num_steps: int, num_train_timesteps: int) -> torch.Tensor:
    """Ascending DDIM timesteps ``linspace(0, T-1, num_steps).round()`` (``[T-1]`` for one step)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if num_steps == 1:
        return torch.tensor([num_train_timesteps - 1])
    ts = torch.linspace(0, num_train_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    if len(torch.unique(ts)) != num_steps:  # cannot happen for num_steps <= T, kept as a guard
        raise RuntimeError("duplicate DDIM timesteps")
    return ts


def _check(x: torch.Tensor, schedule: DiffusionSchedule, num_steps: int, name: str) -> torch.Tensor:
    if not isinstance(schedule, DiffusionSchedule):
        raise TypeError("schedule must be a DiffusionSchedule")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"{name} must be a floating (B, C, ...) tensor")
    return ddim_timesteps(num_steps, schedule.num_train_timesteps)


def _step(x, eps, abar_from: float, abar_to: float, clip: tuple[float, float] | None):
    x0 = (x - (1.0 - abar_from) ** 0.5 * eps) / abar_from**0.5
    if clip is not None:
        x0 = x0.clamp(*clip)
    return abar_to**0.5 * x0 + (1.0 - abar_to) ** 0.5 * eps


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    schedule: DiffusionSchedule,
    num_steps: int = 100,
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Decode ``x_T`` (noise for generation, or an inverted ``x_T``) to ``x0`` in ``num_steps`` DDIM steps (eta 0).

    ``eps_fn(x, t)`` gets ``t`` as a (B,) long tensor. ``clip`` optionally clamps the x0 prediction (not for latents).
    """
    ts = _check(x_T, schedule, num_steps, "x_T")
    abar = schedule.alphas_cumprod
    x = x_T
    b = x.shape[0]
    for i in range(len(ts) - 1, -1, -1):
        t = int(ts[i])
        a_to = float(abar[int(ts[i - 1])]) if i > 0 else 1.0
        eps = eps_fn(x, torch.full((b,), t, device=x.device, dtype=torch.long))
        x = _step(x, eps, float(abar[t]), a_to, clip)
    return x


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    x0: torch.Tensor,
    schedule: DiffusionSchedule,
    num_steps: int = 100,
    fixed_point_iters: int = 0,
) -> torch.Tensor:
    """Deterministic DDIM inversion ``x0 -> x_T`` (the "stochastic encoding") on the same grid as :func:`ddim_sample`.

    ``fixed_point_iters = 0`` is the standard inversion (PDAE/DiffAE/authors' code): each step reuses the epsilon of
    the less noisy point, so a round trip has a first-order error (O(1/num_steps)). With ``k > 0`` each step is
    refined by ``k`` fixed-point iterations ``x_t <- step(x_s, eps_fn(x_t, t))``, which solve for the exact inverse of
    the corresponding :func:`ddim_sample` step (``k`` extra network calls per step).
    """
    ts = _check(x0, schedule, num_steps, "x0")
    if isinstance(fixed_point_iters, bool) or not isinstance(fixed_point_iters, int) or fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be a non-negative int, got {fixed_point_iters!r}")
    abar = schedule.alphas_cumprod
    x = x0
    b = x.shape[0]
    for i in range(len(ts)):
        t_src = int(ts[i - 1]) if i > 0 else int(ts[0])
        t_dst = int(ts[i])
        a_from = float(abar[t_src]) if i > 0 else 1.0
        a_to = float(abar[t_dst])
        eps = eps_fn(x, torch.full((b,), t_src, device=x.device, dtype=torch.long))
        x_new = _step(x, eps, a_from, a_to, None)
        for _ in range(fixed_point_iters):  # decoding t_dst -> src evaluates eps at (x_new, t_dst)
            eps = eps_fn(x_new, torch.full((b,), t_dst, device=x.device, dtype=torch.long))
            x_new = _step(x, eps, a_from, a_to, None)
        x = x_new
    return x


def guided_eps_fn(
    estimator: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    y_sem: torch.Tensor,
    schedule: DiffusionSchedule,
    guidance: str = "score",
    scale: float = 1.0,
) -> EpsFn:
    """``eps_fn`` for :func:`ddim_sample`/:func:`ddim_invert` from a gradient estimator and a semantic code.

    ``estimator(x, t, y_sem, return_eps=True) -> (G, eps_hat)``. ``guidance``: ``"score"`` ->
    ``eps_hat - scale * sqrt(1 - abar_t) G``; ``"pdae"`` -> ``eps_hat + scale * c_t G``; ``"none"`` -> ``eps_hat``
    (the unconditional LDM).
    """
    if guidance not in GUIDANCE_MODES:
        raise ValueError(f"guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")
    coef = schedule.sqrt_one_minus_alphas_cumprod.neg() if guidance == "score" else schedule.pdae_shift

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == "none" and hasattr(estimator, "frozen_eps"):
            return estimator.frozen_eps(x, t)
        y = y_sem if y_sem.shape[0] == x.shape[0] else y_sem.expand(x.shape[0], -1)
        g, eps_hat = estimator(x, t, y, return_eps=True)
        if guidance == "none":
            return eps_hat
        return eps_hat + scale * extract(coef, t, x) * g

    return fn
