"""One-step image super-resolution with onestep (Lightning toolkit)."""

from importlib.metadata import version

__version__ = version("onestep-sr")
