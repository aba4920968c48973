"""Deterministic DDIM (eta = 0) decoding and inversion ("stochastic encoding"), with optional PDAE guidance.

Two settings (config section ``ddim``, :class:`DDIMSettings`; defaults = the authors' code):

* ``grid``, the timesteps visited with ``num_steps = N`` model evaluations:
    - ``"authors"``: ``ts = int(linspace(0, T-1, N+1))`` (N+1 points, truncated). Decoding evaluates the model at
      the upper N points ``ts[N] .. ts[1]`` and ends AT ``t = ts[0] = 0`` (``abar_0 = 1 - beta_0``, 0.9999 for the
      paper's schedule: ~1 % noise is left in the output). Inversion starts from ``x0`` taken as the state at
      ``t = 0`` and evaluates the model at the lower N points ``ts[0] .. ts[N-1]``.
    - ``"exact"`` (ours before): ``ts = round(linspace(0, T-1, N))`` (``[T-1]`` for N = 1) plus the clean end point
      ``abar = 1``; decoding walks ``ts[N-1] -> ... -> ts[0] -> x0`` and inversion the same grid upwards (its first
      step, from ``abar = 1``, evaluates the model at ``ts[0]``), so both directions use the same N points.
* ``clip_x0``: ``[lo, hi]`` or ``None``. With a range, the predicted ``x0`` is clamped at EVERY step of decoding
  AND inversion, and the step then uses the epsilon recomputed from the clamped prediction,
  ``eps' = (x_s / sqrt(abar_s) - x0c) / sqrt(1 / abar_s - 1)`` (authors' code, [-1, 1]). At the exact grid's
  clean end point (``abar_s = 1``, inversion's first step) ``x0 = x_s`` is clamped and the model's epsilon is kept
  (the recomputation would divide by zero).

One DDIM step from noise level ``s`` to ``t`` (:func:`ddim_step`): ``eps = eps_fn(x_s, s)``,
``x0 = (x_s - sqrt(1 - abar_s) eps) / sqrt(abar_s)`` (clamped, eps recomputed, as above), then
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.
(MONAI's ``DDIMScheduler`` is not used for stepping: its ``step`` assumes a spacing of ``T // S`` that does not match
its own rounded ``linspace`` grid, and its ``reversed_step`` is not the inverse of ``step``.)

Guidance with the LDAE estimator (:func:`guided_eps_fn`), the same in both directions:
  * ``"score"`` (PDAE paper, authors' code): ``eps_hat - sqrt(1 - abar_t) * G`` (classifier-guided DDIM);
  * ``"pdae"``: ``eps_hat + c_t * G``, exactly the shift the PDAE loss trains (see :mod:`ldae.diffusion.pdae`); the
    two differ by the factor ``r_t`` on the shift, ~1 except for the smallest timesteps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ldae.verbs import schema_defaults

from .schedule import DiffusionSchedule, extract

__all__ = [
    "DDIM_DEFAULTS",
    "DDIM_GRIDS",
    "DDIMSettings",
    "DDIMStep",
    "ddim_timesteps",
    "ddim_step",
    "sampling_plan",
    "inversion_plan",
    "ddim_sample",
    "ddim_invert",
    "guided_eps_fn",
    "GUIDANCE_MODES",
]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GUIDANCE_MODES = ("score", "pdae", "none")
DDIM_GRIDS = ("authors", "exact")
# config section `ddim` (its defaults are the schema's): the authors' sampler
DDIM_DEFAULTS: dict[str, Any] = schema_defaults("ddim")
Clip = tuple[float, float] | None


def _check_clip(clip_x0: Any, where: str = "ddim.clip_x0") -> Clip:
    if clip_x0 is None:
        return None
    if (
        not isinstance(clip_x0, (list, tuple))
        or len(clip_x0) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in clip_x0)
    ):
        raise ValueError(f"{where} must be null or two numbers [lo, hi], got {clip_x0!r}")
    lo, hi = float(clip_x0[0]), float(clip_x0[1])
    if not lo < hi:
        raise ValueError(f"{where} must have lo < hi, got {clip_x0!r}")
    return lo, hi


def _check_grid(grid: Any, where: str = "ddim.grid") -> str:
    if grid not in DDIM_GRIDS:
        raise ValueError(f"{where} must be one of {DDIM_GRIDS}, got {grid!r}")
    return grid


@dataclass(frozen=True)
class DDIMSettings:
    """The ``ddim`` config section: ``clip_x0`` (``(lo, hi)`` or None) and ``grid`` (``authors`` | ``exact``)."""

    clip_x0: Clip = tuple(DDIM_DEFAULTS["clip_x0"])
    grid: str = DDIM_DEFAULTS["grid"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_x0", _check_clip(self.clip_x0))
        _check_grid(self.grid)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> DDIMSettings:
        """From the config section (missing keys: the defaults); unknown keys are errors naming the key."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(DDIM_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown config key(s) ddim.{unknown[0]}; known: {sorted(DDIM_DEFAULTS)}")
        merged = {**DDIM_DEFAULTS, **section}
        return cls(clip_x0=merged["clip_x0"], grid=merged["grid"])

    def as_config(self) -> dict[str, Any]:
        """The section as written to config.yaml files (lists, not tuples)."""
        return {"clip_x0": None if self.clip_x0 is None else list(self.clip_x0), "grid": self.grid}

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ddim_sample` / :func:`ddim_invert`."""
        return {"clip_x0": self.clip_x0, "grid": self.grid}


_DEFAULT = DDIMSettings()


def ddim_timesteps(num_steps: int, num_train_timesteps: int, grid: str = _DEFAULT.grid) -> torch.Tensor:
    """Ascending grid points: ``int(linspace(0, T-1, N+1))`` (``authors``, N+1 points) or
    ``round(linspace(0, T-1, N))`` (``exact``, N points; ``[T-1]`` for N = 1)."""
    _check_grid(grid, "grid")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    most = num_train_timesteps - 1 if grid == "authors" else num_train_timesteps
    if not 1 <= num_steps <= most:
        raise ValueError(f"num_steps must be in [1, {most}] for the {grid!r} grid, got {num_steps}")
    if grid == "authors":  # numpy's linspace, truncated to int (the authors' code)
        ts = torch.from_numpy(np.linspace(0, num_train_timesteps - 1, num_steps + 1).astype(np.int64))
    elif num_steps == 1:
        ts = torch.tensor([num_train_timesteps - 1])
    else:
        ts = torch.linspace(0, num_train_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    if len(torch.unique(ts)) != len(ts):  # cannot happen within the bounds above, kept as a guard
        raise RuntimeError("duplicate DDIM timesteps")
    return ts


class DDIMStep(NamedTuple):
    """One DDIM step: the new state ``x``, the (clamped) x0 prediction and the epsilon the step used."""

    x: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor


def ddim_step(x: torch.Tensor, eps: torch.Tensor, abar_from: float, abar_to: float, clip_x0: Clip = None) -> DDIMStep:
    """``x`` at noise level ``abar_from`` -> ``abar_to`` with the model epsilon ``eps`` (either direction).

    With ``clip_x0`` the x0 prediction is clamped and, for ``abar_from < 1``, the epsilon recomputed from it:
    ``eps' = (x / sqrt(abar_from) - x0c) / sqrt(1 / abar_from - 1)``."""
    x0 = (x - (1.0 - abar_from) ** 0.5 * eps) / abar_from**0.5
    if clip_x0 is not None:
        x0 = x0.clamp(*clip_x0)
        if abar_from < 1.0:
            eps = (x / abar_from**0.5 - x0) / (1.0 / abar_from - 1.0) ** 0.5
    return DDIMStep(abar_to**0.5 * x0 + (1.0 - abar_to) ** 0.5 * eps, x0, eps)


def _check(x: torch.Tensor, schedule: DiffusionSchedule, num_steps: int, name: str, clip_x0, grid):
    if not isinstance(schedule, DiffusionSchedule):
        raise TypeError("schedule must be a DiffusionSchedule")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"{name} must be a floating (B, C, ...) tensor")
    return ddim_timesteps(num_steps, schedule.num_train_timesteps, grid), _check_clip(clip_x0, "clip_x0")


def sampling_plan(ts: torch.Tensor, abar: torch.Tensor, grid: str) -> list[tuple[int, float, float]]:
    """Decoding steps ``(t where the model is evaluated, abar_from, abar_to)``, from noise to data."""
    a = [float(abar[int(t)]) for t in ts]
    if grid == "authors":
        return [(int(ts[i]), a[i], a[i - 1]) for i in range(len(ts) - 1, 0, -1)]
    return [(int(ts[i]), a[i], a[i - 1] if i > 0 else 1.0) for i in range(len(ts) - 1, -1, -1)]


def inversion_plan(ts: torch.Tensor, abar: torch.Tensor, grid: str) -> list[tuple[int, float, float, int]]:
    """Inversion steps ``(t evaluated, abar_from, abar_to, t reached)``, from data to noise: each decoding step
    reversed, the model evaluated at the less noisy end (the standard DDIM inversion)."""
    a = [float(abar[int(t)]) for t in ts]
    if grid == "authors":
        return [(int(ts[i]), a[i], a[i + 1], int(ts[i + 1])) for i in range(len(ts) - 1)]
    return [(int(ts[max(i - 1, 0)]), a[i - 1] if i > 0 else 1.0, a[i], int(ts[i])) for i in range(len(ts))]


def _t(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    schedule: DiffusionSchedule,
    num_steps: int = 100,
    *,
    clip_x0: Clip = _DEFAULT.clip_x0,
    grid: str = _DEFAULT.grid,
) -> torch.Tensor:
    """Decode ``x_T`` (noise for generation, or an inverted ``x_T``) in ``num_steps`` DDIM steps (eta 0).

    ``eps_fn(x, t)`` gets ``t`` as a (B,) long tensor. ``clip_x0``/``grid``: see the module docstring (defaults:
    the authors' code, clamp [-1, 1] and their grid, ending at ``t = 0``)."""
    ts, clip_x0 = _check(x_T, schedule, num_steps, "x_T", clip_x0, grid)
    x = x_T
    for t, a_from, a_to in sampling_plan(ts, schedule.alphas_cumprod, grid):
        x = ddim_step(x, eps_fn(x, _t(t, x)), a_from, a_to, clip_x0).x
    return x


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    x0: torch.Tensor,
    schedule: DiffusionSchedule,
    num_steps: int = 100,
    fixed_point_iters: int = 0,
    *,
    clip_x0: Clip = _DEFAULT.clip_x0,
    grid: str = _DEFAULT.grid,
) -> torch.Tensor:
    """Deterministic DDIM inversion ``x0 -> x_T`` (the "stochastic encoding"), the reverse of :func:`ddim_sample`
    on the same grid.

    ``fixed_point_iters = 0`` is the standard inversion (PDAE/DiffAE/authors' code): each step uses the epsilon of
    the less noisy point, so a round trip has a first-order error (O(1/num_steps)). With ``k > 0`` each step is
    refined by ``k`` fixed-point iterations ``x_t <- step(x_s, eps_fn(x_t, t))``, which solve for the exact inverse of
    the corresponding :func:`ddim_sample` step when ``clip_x0`` is None (``k`` extra network calls per step).
    """
    ts, clip_x0 = _check(x0, schedule, num_steps, "x0", clip_x0, grid)
    if isinstance(fixed_point_iters, bool) or not isinstance(fixed_point_iters, int) or fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be a non-negative int, got {fixed_point_iters!r}")
    x = x0
    for t_src, a_from, a_to, t_dst in inversion_plan(ts, schedule.alphas_cumprod, grid):
        x_new = ddim_step(x, eps_fn(x, _t(t_src, x)), a_from, a_to, clip_x0).x
        for _ in range(fixed_point_iters):  # decoding t_dst -> src evaluates eps at (x_new, t_dst)
            x_new = ddim_step(x, eps_fn(x_new, _t(t_dst, x)), a_from, a_to, clip_x0).x
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
