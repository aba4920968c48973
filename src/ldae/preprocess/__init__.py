"""ldae.preprocess"""
