"""Quality metrics for SR tables: PSNR/SSIM (Y channel), NIQE, learned ones from local weights.

:class:`MetricSuite` is the entry point; :mod:`~onestep.sr.metrics.fidelity` documents the
PSNR/SSIM/NIQE conventions and :mod:`~onestep.sr.metrics.learned` the weight files each learned
metric needs. pyiqa and BasicSR are imported only when a suite is built (they take seconds).
"""

from onestep.sr.metrics.fidelity import MetricSkippedError
from onestep.sr.metrics.learned import LEARNED_WEIGHTS, LearnedWeights, MissingWeightsError
from onestep.sr.metrics.suite import FULL_REFERENCE, KNOWN_METRICS, LOWER_BETTER, MetricSuite

__all__ = [
    "FULL_REFERENCE",
    "KNOWN_METRICS",
    "LEARNED_WEIGHTS",
    "LOWER_BETTER",
    "LearnedWeights",
    "MetricSkippedError",
    "MetricSuite",
    "MissingWeightsError",
]
