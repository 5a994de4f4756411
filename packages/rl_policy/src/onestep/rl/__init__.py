"""One-step flow policies for offline reinforcement learning with onestep (Lightning toolkit)."""

from importlib.metadata import version

__version__ = version("onestep-rl")
