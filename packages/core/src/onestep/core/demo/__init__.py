"""``onestep demo``: the first vertical slice, DMD2 on the sklearn digits, on a CPU in minutes.

Trains (or loads from the user cache) a rectified-flow teacher and a feature classifier, distills
the teacher into a one-step student with DMD2, and compares quality (Frechet distance) and
latency of teacher and student side by side.
"""

from onestep.core.demo.dmd2 import dmd_gradient_loss
from onestep.core.demo.main import demo_main

__all__ = ["demo_main", "dmd_gradient_loss"]
