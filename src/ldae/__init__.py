"""LDAE: Latent Diffusion Autoencoders for 3-D brain MRI, as a Snakemake workflow."""

__version__ = "0.1.0"
