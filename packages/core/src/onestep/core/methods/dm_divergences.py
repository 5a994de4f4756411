"""Which student loss each divergence name means (the math itself lives in ``objectives``).

==========  ===================================================================  ==============
name        student loss                                                         needs
==========  ===================================================================  ==============
dmd2        reverse KL, DMD (Yin et al. 2023, eq. 7-8; DMD2 2024, eq. 2)         -
vsd         variational score distillation (ProlificDreamer, Wang et al. 2023)   -
sid         score identity distillation (Zhou et al. 2024, eq. 13), alpha        grad through nets
sim         score implicit matching (Luo et al. 2024), pseudo-Huber ``c``        grad through nets
fdiv-*      f-distill (Xu et al. 2025): DMD gradient weighted by ``h(r)``;        discriminator
            ``fdiv-rkl`` (reverse KL), ``fdiv-fkl`` (forward KL), ``fdiv-js``
==========  ===================================================================  ==============

"grad through nets": the loss differentiates the teacher's and fake score's ``x0`` predictions
with respect to their input ``x_t`` (built from the student sample); their parameters still get
no update in the student step.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from onestep.core import objectives

__all__ = ["DIVERGENCES", "Divergence", "divergence", "student_loss"]


@dataclass(frozen=True)
class Divergence:
    """How a divergence is run.

    Attributes:
        name: the configured name.
        through_networks: gradients must flow through the teacher / fake-score inputs.
        needs_ratio: needs a density-ratio estimate ``log p_teacher / p_student`` (discriminator).
    """

    name: str
    through_networks: bool = False
    needs_ratio: bool = False

    @property
    def f(self) -> str:
        """The f-divergence's short name (``rkl``, ``fkl``, ``js``) for ``fdiv-*``."""
        return self.name.removeprefix("fdiv-")


DIVERGENCES: dict[str, Divergence] = {
    "dmd2": Divergence("dmd2"),
    "vsd": Divergence("vsd"),
    "sid": Divergence("sid", through_networks=True),
    "sim": Divergence("sim", through_networks=True),
    "fdiv-rkl": Divergence("fdiv-rkl", needs_ratio=True),
    "fdiv-fkl": Divergence("fdiv-fkl", needs_ratio=True),
    "fdiv-js": Divergence("fdiv-js", needs_ratio=True),
}


def divergence(name: str) -> Divergence:
    """Look up a divergence by name; the error lists the valid ones."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; use one of {sorted(DIVERGENCES)}")
    return DIVERGENCES[name]


def student_loss(
    spec: Divergence,
    x: Tensor,
    x0_real: Tensor,
    x0_fake: Tensor,
    *,
    log_ratio: Tensor | None = None,
    sid_alpha: float = 1.2,
    sim_c: float = 1.0,
) -> Tensor:
    """Per-sample student loss ``[B]`` of divergence ``spec``.

    Args:
        spec: the divergence (from :func:`divergence`).
        x: student samples that require grad, ``[B, ...]``.
        x0_real: teacher's ``x0`` at the noised ``x``.
        x0_fake: fake score's ``x0`` at the noised ``x``.
        log_ratio: ``[B]`` discriminator estimate of ``log p_teacher(x_t) / p_student(x_t)``;
            required by ``fdiv-*``.
        sid_alpha: SiD's ``alpha`` (Zhou et al. 2024 use 1.2).
        sim_c: SIM's pseudo-Huber constant.
    """
    if spec.name == "dmd2":
        return objectives.dmd_loss(x, x0_real, x0_fake)
    if spec.name == "vsd":
        return objectives.vsd_loss(x, x0_real, x0_fake)
    if spec.through_networks:
        # SiD's (and here SIM's) per-sample scale: DMD's normaliser, detached (SiD, sec. 4).
        norm = objectives.dmd_normalizer(x.detach(), x0_real.detach())
        if spec.name == "sid":
            return objectives.sid_loss(x, x0_real, x0_fake, alpha=sid_alpha, weight=norm)
        return objectives.sim_loss(x, x0_real, x0_fake, c=sim_c, weight=norm)
    if log_ratio is None:
        raise ValueError(f"divergence {spec.name!r} needs log_ratio from a discriminator")
    weight = objectives.fdiv_weight(log_ratio.detach(), spec.f).detach()
    return objectives.dmd_loss(x, x0_real, x0_fake, weight=weight)
