"""Recursa: multi-agent reasoning with language models (latent, code, plan and text channels)."""

__version__ = "0.1.0"
