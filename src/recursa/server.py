"""`recursa serve` lives in the `recursa.serve` package; this module keeps the old import path working."""

from recursa.serve import ApiError, ContinuousBatcher, ServerThread, create_app, serve, served_names

__all__ = ["ApiError", "ContinuousBatcher", "ServerThread", "create_app", "serve", "served_names"]
