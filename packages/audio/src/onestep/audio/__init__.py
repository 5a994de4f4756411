"""One-step speech and music generation with onestep (Lightning toolkit)."""

from importlib.metadata import version

__version__ = version("onestep-audio")
