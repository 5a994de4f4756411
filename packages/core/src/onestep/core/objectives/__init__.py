"""Pure distillation objectives: tensors in, per-sample loss ``[B]`` out.

No network calls, no randomness, no batch reduction; every reduction is over the non-batch dims.
Methods (:mod:`onestep.core.methods`) call the networks and hand the tensors to these functions.
"""

from onestep.core.objectives.adversarial import (
    GAN_KINDS,
    gan_discriminator_loss,
    gan_generator_loss,
    r1_penalty,
)
from onestep.core.objectives.distances import (
    DISTANCES,
    distance,
    ict_huber_c,
    pseudo_huber,
    squared_l2,
)
from onestep.core.objectives.distribution import (
    FDIVERGENCES,
    dmd_loss,
    dmd_normalizer,
    fdiv_weight,
    sid_loss,
    sim_loss,
    vsd_loss,
)
from onestep.core.objectives.dsm import DSM_WEIGHTS, dsm_loss, dsm_weight, mean_flat
from onestep.core.objectives.tdm import tdm_loss, tdm_times

__all__ = [
    "DISTANCES",
    "DSM_WEIGHTS",
    "FDIVERGENCES",
    "GAN_KINDS",
    "distance",
    "dmd_loss",
    "dmd_normalizer",
    "dsm_loss",
    "dsm_weight",
    "fdiv_weight",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "ict_huber_c",
    "mean_flat",
    "pseudo_huber",
    "r1_penalty",
    "sid_loss",
    "sim_loss",
    "squared_l2",
    "tdm_loss",
    "tdm_times",
    "vsd_loss",
]
