"""Generic Lightning methods: student / teacher / fake_score / discriminator injected.

Distribution matching (:class:`DistributionMatching`, :class:`MultiStudent`) and the trajectory
family: consistency distillation / training (:class:`ConsistencyDistillation`), continuous-time
consistency (:class:`ContinuousConsistency`), CTM (:class:`ConsistencyTrajectory`),
:class:`MeanFlow` and rectified flow / reflow / distillation (:class:`RectifiedFlow`).
"""

from onestep.core.methods.consistency import ConsistencyDistillation
from onestep.core.methods.ctm import ConsistencyTrajectory
from onestep.core.methods.distribution_matching import DistributionMatching
from onestep.core.methods.dm_divergences import DIVERGENCES
from onestep.core.methods.dm_multi_student import MultiStudent
from onestep.core.methods.meanflow import MeanFlow
from onestep.core.methods.rectified_flow import RectifiedFlow
from onestep.core.methods.scm import ContinuousConsistency

__all__ = [
    "DIVERGENCES",
    "ConsistencyDistillation",
    "ConsistencyTrajectory",
    "ContinuousConsistency",
    "DistributionMatching",
    "MeanFlow",
    "MultiStudent",
    "RectifiedFlow",
]
