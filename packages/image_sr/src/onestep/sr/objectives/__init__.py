"""Pure SR objectives: tensors in, per-sample loss ``[B]`` out (no networks, no randomness).

* :mod:`~onestep.sr.objectives.ctmsr`: CTMSR (You et al. 2025): the noisy-LR-to-HR process and
  its PF-ODE, consistency training on it, Distribution Trajectory Matching.
* :mod:`~onestep.sr.objectives.tadsr`: TAD-SR (He et al. 2024): high-frequency enhanced score
  distillation and the time-aware latent adversarial losses.
"""

from onestep.sr.objectives.ctmsr import (
    CT_DISTANCES,
    CTMSRProcess,
    charbonnier,
    ctmsr_consistency,
    ctmsr_ct_loss,
    ctmsr_ct_pair,
    ctmsr_num_points,
    ctmsr_time_grid,
    dtm_inputs,
    dtm_loss,
    dtm_target,
    dtm_weight,
)
from onestep.sr.objectives.tadsr import (
    TADSR_TIMES,
    tadsr_discriminator_loss,
    tadsr_distill_loss,
    tadsr_eps_from_x0,
    tadsr_generator_loss,
    tadsr_hfsd_loss,
    tadsr_noised_pair,
    tadsr_time_grid,
)

__all__ = [
    "CT_DISTANCES",
    "TADSR_TIMES",
    "CTMSRProcess",
    "charbonnier",
    "ctmsr_consistency",
    "ctmsr_ct_loss",
    "ctmsr_ct_pair",
    "ctmsr_num_points",
    "ctmsr_time_grid",
    "dtm_inputs",
    "dtm_loss",
    "dtm_target",
    "dtm_weight",
    "tadsr_discriminator_loss",
    "tadsr_distill_loss",
    "tadsr_eps_from_x0",
    "tadsr_generator_loss",
    "tadsr_hfsd_loss",
    "tadsr_noised_pair",
    "tadsr_time_grid",
]
