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
    "DSM_WEIGHTS",
    "FDIVERGENCES",
    "GAN_KINDS",
    "dmd_loss",
    "dmd_normalizer",
    "dsm_loss",
    "dsm_weight",
    "fdiv_weight",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "mean_flat",
    "r1_penalty",
    "sid_loss",
    "sim_loss",
    "tdm_loss",
    "tdm_times",
    "vsd_loss",
]
