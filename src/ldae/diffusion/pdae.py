r"""PDAE objective (Zhang et al. 2022, "Unsupervised Representation Learning from Pre-trained Diffusion Probabilistic
Models") as used by LDAE, and the plain epsilon loss of stages 2 (LDM) and the DAE baseline.

Derivation of the epsilon shift
-------------------------------
Notation: ``alpha_t = 1 - beta_t``, ``abar_t = prod_{s<=t} alpha_s``, ``abar_{-1} := 1``,
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

1. The pretrained DDPM's reverse mean in epsilon form is
   ``mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) * eps_theta(x_t, t)) / sqrt(alpha_t)``
   with variance ``Sigma_t = beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t`` (the true posterior's).
2. Conditioning on ``y`` as classifier guidance (Dhariwal & Nichol 2021): ``p(x_{t-1} | x_t, y)`` is approximately
   Gaussian with mean ``mu_theta(x_t, t) + Sigma_t * grad_{x_t} log p(y | x_t)``. PDAE replaces the unknown
   classifier gradient by a learned estimator ``G(x_t, y, t)`` and so fills the "posterior mean gap" between
   the unconditional ``mu_theta`` and the conditional posterior mean:
   ``mu_theta(x_t, y) = mu_theta(x_t, t) + beta_tilde_t * G``.
3. Writing the shifted mean back in epsilon form, ``mu_theta(x_t, y) = (x_t - beta_t / sqrt(1-abar_t) * eps') /
   sqrt(alpha_t)`` gives ``eps' = eps_theta - sqrt(alpha_t) sqrt(1 - abar_t) / beta_t * beta_tilde_t * G``, i.e.

   ``eps' = eps_theta(x_t, t) + c_t G``,   ``c_t = -sqrt(alpha_t) (1 - abar_{t-1}) / sqrt(1 - abar_t)``.

   (``c_0 = 0``: at ``t = 0`` the posterior is deterministic and G is unconstrained.)
4. The DDPM mean-matching loss ``|| mu_tilde(x_t, x0) - mu_theta(x_t, y) ||^2`` is, up to the per-t factor
   ``beta_t^2 / (alpha_t (1 - abar_t))``, ``|| eps - eps_theta(x_t, t) - c_t G ||^2``. PDAE reweights it with
   ``lambda_t = (1 / (1 + SNR_t))^{1-gamma} (SNR_t / (1 + SNR_t))^gamma = SNR_t^gamma / (1 + SNR_t)``,
   ``SNR_t = abar_t / (1 - abar_t)``, ``gamma = 0.1``:

   ``L = E_{x0, t, eps} [ lambda_t || eps - (eps_theta(x_t, t) + c_t G(x_t, Enc(x0), t)) ||^2 ]``,

   the authors' code's loss. Its minimiser is ``c_t G* = E[eps | x_t, y] - eps_theta(x_t, t)``: with it, ``eps'``
   is the conditional posterior mean of the noise and ``mu_theta(x_t, y)`` equals the exact conditional posterior
   mean ``E[x_{t-1} | x_t, y]`` (the Gaussian test in tests/test_diffusion.py checks this).

Relation to the DDIM guidance ``eps_theta - sqrt(1 - abar_t) G`` (PDAE paper and authors' code): since
``grad log p(y | x_t) = -(E[eps|x_t,y] - E[eps|x_t]) / sqrt(1 - abar_t)``, the loss's minimiser is
``G* = grad log p(y | x_t) / r_t`` with ``r_t = -c_t / sqrt(1 - abar_t) = sqrt(alpha_t)(1 - abar_{t-1})/(1 - abar_t)``.
For the paper's linear schedule ``r_t`` = 0.45 at t = 1, 0.86 at t = 10, 0.98 at t = 100 and 0.99-0.994 for
t >= 200 (0.990 at t = 999), but ``r_0 = 0``. So ``eps_theta - sqrt(1 - abar_t) G*`` equals the training-consistent
``eps_theta + c_t G*`` up to the factor ``1 / r_t`` on the shift, which only matters at the last few small-t steps.
:mod:`ldae.diffusion.ddim` offers both (``guidance="score"`` = paper/code, ``guidance="pdae"`` = exactly the
trained shift).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import DiffusionSchedule, extract

__all__ = ["pdae_shifted_eps", "pdae_loss", "eps_loss", "posterior_mean_from_eps"]


def pdae_shifted_eps(
    eps_hat: torch.Tensor, g: torch.Tensor, t: torch.Tensor, schedule: DiffusionSchedule
) -> torch.Tensor:
    """``eps_hat + c_t * G``."""
    return eps_hat + extract(schedule.pdae_shift, t, eps_hat) * g


def posterior_mean_from_eps(x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: DiffusionSchedule):
    """DDPM reverse mean ``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)``."""
    beta = extract(schedule.betas, t, x_t)
    return (x_t - beta / extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(
        schedule.alphas.sqrt(), t, x_t
    )


def _weighted_mean(err: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    per_sample = err.flatten(1).mean(dim=1)
    if w is not None:
        per_sample = per_sample * w.to(per_sample)
    return per_sample.mean()


def pdae_loss(
    estimator: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    y_sem: torch.Tensor,
    schedule: DiffusionSchedule,
    gamma: float | None = 0.1,
) -> torch.Tensor:
    """``mean_b lambda_t || noise - (eps_hat(x_t, t) + c_t G(x_t, y_sem, t)) ||^2`` (per-element mean).

    ``estimator(x_t, t, y_sem, return_eps=True)`` must return ``(G, eps_hat)``
    (:class:`ldae.models.gradient_estimator.GradientEstimator`). ``gamma=None`` disables the weighting.
    """
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ in shape")
    t = torch.as_tensor(t, device=x0.device).long()
    if t.ndim != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError("t must be a (B,) tensor of timesteps")
    x_t = schedule.q_sample(x0, t, noise)
    g, eps_hat = estimator(x_t, t, y_sem, return_eps=True)
    pred = pdae_shifted_eps(eps_hat, g, t, schedule)
    w = schedule.snr_weight(t, gamma) if gamma is not None else None
    return _weighted_mean((noise - pred) ** 2, w)


def eps_loss(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: DiffusionSchedule,
) -> torch.Tensor:
    """Plain DDPM epsilon MSE ``|| noise - model_fn(x_t, t) ||^2`` (LDM stage 2; the DAE with a y-closure)."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ in shape")
    t = torch.as_tensor(t, device=x0.device).long()
    x_t = schedule.q_sample(x0, t, noise)
    return _weighted_mean((noise - model_fn(x_t, t)) ** 2, None)
