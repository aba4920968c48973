# AutoencoderKL -> latents -> latent DDPM -> LDAE (training stages).
