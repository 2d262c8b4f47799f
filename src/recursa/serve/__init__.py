"""`recursa serve`: an OpenAI-compatible server over the local backend, with streaming and continuous batching."""

from recursa.serve.app import ServerThread, create_app, serve, served_names
from recursa.serve.engine import ContinuousBatcher, EngineStats
from recursa.serve.schema import ApiError, ChatRequest

__all__ = ["ApiError", "ChatRequest", "ContinuousBatcher", "EngineStats", "ServerThread", "create_app", "serve",
           "served_names"]
