"""Toy data with exact answers: Gaussian mixtures with an analytic teacher, sklearn digits."""

from onestep.core.data.digits import DigitsDataModule, load_digits_tensor
from onestep.core.data.gmm import GaussianMixture, GMMDenoiser, noised_log_prob

__all__ = [
    "DigitsDataModule",
    "GMMDenoiser",
    "GaussianMixture",
    "load_digits_tensor",
    "noised_log_prob",
]
