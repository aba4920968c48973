"""DDPM noise schedule (paper: T = 1000, linear betas 1e-4 .. 0.02), wrapping MONAI's schedulers.

The betas come from MONAI's ``NoiseSchedules`` (the same function ``DDPMScheduler``/``DDIMScheduler`` use); the
cumulative products are taken in float64 so that DDIM inversion round trips are limited by the ODE discretisation,
not by float32 round-off. Tensors are cast to the caller's dtype/device on use.

Config keys (section ``diffusion``): num_train_timesteps: 1000, schedule: "linear_beta", beta_start: 1.0e-4,
beta_end: 0.02.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.schedulers.scheduler import NoiseSchedules

from ldae.verbs import schema_defaults

__all__ = ["SCHEDULE_DEFAULTS", "DiffusionSchedule", "extract"]

SCHEDULE_DEFAULTS: dict[str, Any] = schema_defaults("ldm.diffusion")  # T=1000 linear betas (the schema's)


def extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` reshaped to broadcast against ``like`` (B, ...) and cast to its dtype/device."""
    t = torch.as_tensor(t, device=values.device).long()
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    out = values[t].to(device=like.device, dtype=like.dtype)
    return out.reshape(out.shape + (1,) * (like.ndim - 1))


class DiffusionSchedule:
    """Betas, alphas, cumulative alphas (``abar``), SNR and the PDAE coefficients for ``t = 0 .. T-1``.

    ``abar_prev[t] = abar[t-1]`` with ``abar[-1] := 1``.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        if int(num_train_timesteps) < 2:
            raise ValueError("num_train_timesteps must be >= 2")
        self.num_train_timesteps = int(num_train_timesteps)
        self.schedule_name = schedule
        self.schedule_args = {"beta_start": float(beta_start), "beta_end": float(beta_end)}
        sched = NoiseSchedules[schedule](num_train_timesteps=self.num_train_timesteps, **self.schedule_args)
        betas = (sched[0] if isinstance(sched, tuple) else sched).to(torch.float64)
        if not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must lie in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        #: posterior variance beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t
        self.posterior_variance = (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod) * betas
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        #: PDAE epsilon-shift coefficient c_t = -sqrt(alpha_t) (1 - abar_{t-1}) / sqrt(1 - abar_t) (see pdae.py)
        self.pdae_shift = -self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / self.sqrt_one_minus_alphas_cumprod

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None) -> DiffusionSchedule:
        c = {**SCHEDULE_DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in SCHEDULE_DEFAULTS}}
        return cls(**c)

    def __len__(self) -> int:
        return self.num_train_timesteps

    # --- forward process ---------------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0) * x0 + extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (x_t - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(
            self.sqrt_alphas_cumprod, t, x_t
        )

    def sample_timesteps(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform ``t ~ U{0, ..., T-1}``."""
        return torch.randint(0, self.num_train_timesteps, (batch,), device=device, generator=generator)

    def snr_weight(self, t: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
        """PDAE weighting ``lambda_t = SNR_t^gamma / (1 + SNR_t)`` (float64, shape of ``t``)."""
        snr = self.snr[torch.as_tensor(t).long().cpu()]
        return snr**gamma / (1.0 + snr)
