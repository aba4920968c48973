"""ldae.diffusion: noise schedule, PDAE objective, DDIM decoding/inversion, interpolation maths."""

from .ddim import (
    DDIM_DEFAULTS,
    DDIMSettings,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    guided_eps_fn,
)
from .interpolation import alpha_from_months, lerp, slerp
from .pdae import eps_loss, pdae_loss, pdae_shifted_eps, posterior_mean_from_eps
from .schedule import DiffusionSchedule, extract

__all__ = [
    "DiffusionSchedule",
    "extract",
    "pdae_loss",
    "pdae_shifted_eps",
    "posterior_mean_from_eps",
    "eps_loss",
    "DDIM_DEFAULTS",
    "DDIMSettings",
    "ddim_step",
    "ddim_sample",
    "ddim_invert",
    "ddim_timesteps",
    "guided_eps_fn",
    "lerp",
    "slerp",
    "alpha_from_months",
]
