"""ldae.models"""
