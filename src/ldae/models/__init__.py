"""ldae.models: the networks (no file I/O besides loading given weight files)."""

from .autoencoder import (
    build_autoencoder,
    build_discriminator,
    build_perceptual_loss,
    encode_mean,
    latent_scale_factor,
    load_pretrained_autoencoder,
)
from .baselines import SupervisedEncoder, VoxelDAE, build_dae, build_supervised_encoder
from .gradient_estimator import GradientEstimator
from .ldm_unet import AdaGNResnetBlock, build_ldm_unet, count_parameters
from .semantic_encoder import SemanticEncoder, build_semantic_encoder

__all__ = [
    "build_autoencoder",
    "build_discriminator",
    "build_perceptual_loss",
    "encode_mean",
    "latent_scale_factor",
    "load_pretrained_autoencoder",
    "build_ldm_unet",
    "count_parameters",
    "AdaGNResnetBlock",
    "GradientEstimator",
    "SemanticEncoder",
    "build_semantic_encoder",
    "VoxelDAE",
    "SupervisedEncoder",
    "build_dae",
    "build_supervised_encoder",
]
