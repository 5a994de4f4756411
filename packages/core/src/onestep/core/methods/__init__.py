"""Generic Lightning methods: student / teacher / fake_score / discriminator injected."""

from onestep.core.methods.distribution_matching import DistributionMatching
from onestep.core.methods.dm_divergences import DIVERGENCES
from onestep.core.methods.dm_multi_student import MultiStudent

__all__ = ["DIVERGENCES", "DistributionMatching", "MultiStudent"]
