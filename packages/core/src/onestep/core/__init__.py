"""The shared core of onestep.

Noise processes, the Denoiser contract, distillation objectives, samplers, LoRA, EMA, metrics and
Lightning methods.
"""

from importlib.metadata import version

__version__ = version("onestep-core")
