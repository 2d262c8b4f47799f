"""Managed model engines (`recursa engine start|stop|status`): vLLM in its own venv, serving on loopback."""
