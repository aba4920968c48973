"""The ONE object per model that evaluation, the Python API and the tests use: encode (y_sem, latent, x_T), decode,
reconstruct. Models are PASSED IN (loaded by :mod:`ldae.models.io`, or tiny random networks in the tests).

LDAE (paper, "Using the trained model"):
  * semantic encoding ``y_sem = Enc(x0)`` on the image;
  * latent ``z = scale * AE.encode_mean(x0)`` (unit-variance latent of stage 2);
  * stochastic encoding ``x_T = DDIM-invert(z)`` with the y_sem-guided epsilon (eta 0);
  * decoding: DDIM from ``x_T`` (inverted or noise) guided by ``y_sem``, then ``AE.decode(z / scale)``.
LDDIM: the same with the frozen, unconditional LDM epsilon. DAE baseline: the same in voxel space with the
y-conditioned image U-Net (images resized to the DAE's resolution when it differs).
Every inversion and decoding uses the pipeline's ``ddim`` settings (config section ``ddim``: x0 clamp and grid;
:class:`ldae.diffusion.DDIMSettings`, default the authors' sampler).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ldae.diffusion import DDIMSettings, DiffusionSchedule, ddim_invert, ddim_sample, guided_eps_fn

from .ldm_unet import count_parameters

__all__ = ["LDAEPipeline", "DAEPipeline", "EncoderPipeline", "seeded_noise"]


def seeded_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``seed`` (identical on every device), then moved."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=gen).to(device)


def _device_of(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@dataclass
class EncoderPipeline:
    """Only a semantic encoder: the supervised baseline's pipeline (its features, ``semantic``)."""

    encoder: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return _device_of(self.encoder)

    @torch.no_grad()
    def semantic(self, images: torch.Tensor) -> torch.Tensor:
        self.encoder.eval()
        return self.encoder(images.to(self.device)).float()


@dataclass
class LDAEPipeline:
    """AutoencoderKL + gradient estimator (frozen LDM inside) + semantic encoder + schedule."""

    autoencoder: torch.nn.Module
    estimator: torch.nn.Module
    encoder: torch.nn.Module
    schedule: DiffusionSchedule
    scale_factor: float
    guidance: str = "score"
    ddim: DDIMSettings = field(default_factory=DDIMSettings)

    def __post_init__(self) -> None:
        for m in (self.autoencoder, self.estimator, self.encoder):
            m.eval()

    @property
    def device(self) -> torch.device:
        return _device_of(self.autoencoder)

    @property
    def y_dim(self) -> int:
        return int(self.estimator.y_dim)

    # --- encoders ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def semantic(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.to(self.device)).float()

    @torch.no_grad()
    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled posterior-mean latent ``scale * z_mu``."""
        z_mu, _ = self.autoencoder.encode(images.to(self.device))
        return z_mu * self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from a scaled latent."""
        return self.autoencoder.decode(z.to(self.device) / self.scale_factor)

    def eps_fn(self, y_sem: torch.Tensor | None):
        """Guided epsilon for ``y_sem``; ``None`` gives the unconditional LDM (LDDIM)."""
        if y_sem is None:
            return guided_eps_fn(
                self.estimator, torch.zeros(1, self.y_dim, device=self.device), self.schedule, guidance="none"
            )
        return guided_eps_fn(self.estimator, y_sem.to(self.device), self.schedule, guidance=self.guidance)

    @torch.no_grad()
    def invert(self, z: torch.Tensor, y_sem: torch.Tensor | None, steps: int) -> torch.Tensor:
        """Deterministic DDIM inversion ``z -> x_T`` (conditioned on ``y_sem``, or unconditional)."""
        return ddim_invert(
            self.eps_fn(y_sem), z.to(self.device), self.schedule, num_steps=int(steps), **self.ddim.kwargs()
        )

    @torch.no_grad()
    def sample(self, x_T: torch.Tensor, y_sem: torch.Tensor | None, steps: int) -> torch.Tensor:
        """DDIM decoding (eta 0) ``x_T -> z`` (scaled latent)."""
        return ddim_sample(
            self.eps_fn(y_sem), x_T.to(self.device), self.schedule, num_steps=int(steps), **self.ddim.kwargs()
        )

    def parameter_count(self) -> int:
        """Table 5's count (the paper's ~920M): semantic encoder + gradient estimator with the frozen LDM inside;
        the autoencoder is NOT counted (:meth:`autoencoder_parameter_count`)."""
        return count_parameters(self.estimator, self.encoder)

    def autoencoder_parameter_count(self) -> int:
        return count_parameters(self.autoencoder)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, steps: int) -> torch.Tensor:
        """Full encode-decode at ``steps``: y_sem, latent, inversion, decoding, AE decoder."""
        y = self.semantic(images)
        x_T = self.invert(self.latent(images), y, steps)
        return self.decode(self.sample(x_T, y, steps))


@dataclass
class DAEPipeline:
    """Voxel-space diffusion autoencoder (:class:`ldae.models.VoxelDAE`) + schedule, at ``shape`` (None: native).

    Images are in [0, 1] everywhere outside; the semantic encoder sees them so, the diffusion runs on
    ``2 x - 1`` (DiffAE convention; ``signed=False``: on [0, 1] directly). :meth:`invert` takes images,
    :meth:`sample` returns images (not clamped). ``ddim.clip_x0`` is read on the signed scale: with
    ``signed=False`` the range maps like the images (``[-1, 1] -> [0, 1]``), so the default clamps x0 to the image
    range either way."""

    dae: torch.nn.Module
    schedule: DiffusionSchedule
    shape: tuple[int, int, int] | None = None
    signed: bool = True
    ddim: DDIMSettings = field(default_factory=DDIMSettings)
    eval_mode: bool = True  # False: the training module's own pipeline (no eval() switch inside training)

    def __post_init__(self) -> None:
        if self.eval_mode:
            self.dae.eval()

    @property
    def device(self) -> torch.device:
        return _device_of(self.dae)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the DAE's resolution (area averaging when shrinking, trilinear otherwise)."""
        images = images.to(self.device).float()
        if self.shape is None or tuple(images.shape[2:]) == tuple(self.shape):
            return images
        shrink = all(s <= t for s, t in zip(self.shape, images.shape[2:]))
        mode = "area" if shrink else "trilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        return F.interpolate(images, size=tuple(int(s) for s in self.shape), mode=mode, **kw)

    def to_diffusion(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1 if self.signed else images

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 if self.signed else x

    def ddim_kwargs(self) -> dict:
        """The DDIM settings in the diffusion variable's scale (``clip_x0`` mapped to [0, 1] when unsigned)."""
        clip = self.ddim.clip_x0
        if clip is not None and not self.signed:
            clip = ((clip[0] + 1) / 2, (clip[1] + 1) / 2)
        return {"clip_x0": clip, "grid": self.ddim.grid}

    @torch.no_grad()
    def semantic(self, images: torch.Tensor) -> torch.Tensor:
        return self.dae.encode(self.resize(images)).float()

    def eps_fn(self, y_sem: torch.Tensor):
        y_sem = y_sem.to(self.device)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            y = y_sem if y_sem.shape[0] == x.shape[0] else y_sem.expand(x.shape[0], -1)
            return self.dae(x, t, y)

        return fn

    @torch.no_grad()
    def invert(self, images_resized: torch.Tensor, y_sem: torch.Tensor, steps: int) -> torch.Tensor:
        """x_T of images already at the DAE's resolution (see :meth:`resize`), in [0, 1]."""
        x0 = self.to_diffusion(images_resized.to(self.device).float())
        return ddim_invert(self.eps_fn(y_sem), x0, self.schedule, num_steps=int(steps), **self.ddim_kwargs())

    @torch.no_grad()
    def sample(self, x_T: torch.Tensor, y_sem: torch.Tensor, steps: int) -> torch.Tensor:
        """Decoded image in [0, 1] (not clamped)."""
        return self.from_diffusion(
            ddim_sample(
                self.eps_fn(y_sem), x_T.to(self.device), self.schedule, num_steps=int(steps), **self.ddim_kwargs()
            )
        )

    def parameter_count(self) -> int:
        return count_parameters(self.dae)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, steps: int) -> torch.Tensor:
        x = self.resize(images)
        y = self.dae.encode(x)
        return self.sample(self.invert(x, y, steps), y, steps)
