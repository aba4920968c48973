"""ldae.evaluation"""
