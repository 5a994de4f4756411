"""One-step 3-D generation with onestep (Lightning toolkit)."""

from importlib.metadata import version

__version__ = version("onestep-3d")
