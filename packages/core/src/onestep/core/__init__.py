"""The shared core of onestep.

Noise processes, the Denoiser contract, distillation objectives, samplers, LoRA, EMA, metrics and
Lightning methods.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onestep-core")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+source"
