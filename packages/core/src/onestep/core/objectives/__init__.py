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

# The trajectory family lives in its own modules (import from them directly):
#   consistency (CD / CT / iCT / TSCD), scm (sCM, TrigFlow), ctm, meanflow, flow_matching.
from onestep.core.objectives.consistency import consistency_loss, consistency_scalings
from onestep.core.objectives.ctm import ctm_jump, ctm_loss
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
from onestep.core.objectives.flow_matching import distillation_loss, flow_matching_loss
from onestep.core.objectives.meanflow import meanflow_loss, meanflow_target
from onestep.core.objectives.scm import scm_loss, scm_tangent
from onestep.core.objectives.tdm import tdm_loss, tdm_times

__all__ = [
    "DISTANCES",
    "DSM_WEIGHTS",
    "FDIVERGENCES",
    "GAN_KINDS",
    "consistency_loss",
    "consistency_scalings",
    "ctm_jump",
    "ctm_loss",
    "distance",
    "distillation_loss",
    "dmd_loss",
    "dmd_normalizer",
    "dsm_loss",
    "dsm_weight",
    "fdiv_weight",
    "flow_matching_loss",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "ict_huber_c",
    "mean_flat",
    "meanflow_loss",
    "meanflow_target",
    "pseudo_huber",
    "r1_penalty",
    "scm_loss",
    "scm_tangent",
    "sid_loss",
    "sim_loss",
    "squared_l2",
    "tdm_loss",
    "tdm_times",
    "vsd_loss",
]
