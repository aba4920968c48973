"""ldae.diffusion"""
