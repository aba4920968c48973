"""ldae.data"""
