"""Aime (arXiv 2507.11988): dynamic planner, actor factory, ReAct actors and a durable progress board."""

from recursa.methods.aime.board import ProgressBoard
from recursa.methods.aime.method import Aime, AimeConfig

__all__ = ["Aime", "AimeConfig", "ProgressBoard"]
