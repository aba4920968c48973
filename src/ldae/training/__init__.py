"""ldae.training"""
