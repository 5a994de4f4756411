"""Causal few-step video generation with onestep (Lightning toolkit)."""

from importlib.metadata import version

__version__ = version("onestep-video")
