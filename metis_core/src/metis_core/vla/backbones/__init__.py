"""Backbones of the METIS policy."""
