"""The consistency 2-D benchmark trainer: a working ``generate`` and a short convergence."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook

from onestep.core.bench.traj_common import ring_goal_scores, ring_teacher
from onestep.core.bench.traj_consistency import DEFAULTS, TimeMLP, train_consistency
from onestep.core.metrics import energy_distance, mode_coverage


@pytest.mark.parametrize("method", ["cd", "ct", "tscd"])
def test_trainer_returns_a_working_generator(method: str):
    result = train_consistency(method, steps=8, seed=0)
    assert result.method == method and result.steps == 8 and result.train_s > 0
    eps = torch.randn(64, 2)
    for nfe in (1, 2, 4):
        x = result.generate(eps, nfe)
        assert x.shape == (64, 2) and bool(torch.isfinite(x).all())
    with pytest.raises(ValueError, match="nfe"):
        result.generate(eps, 3)


def test_generate_uses_exactly_nfe_network_evaluations():
    result = train_consistency("cd", steps=2, seed=0)
    calls: list[int] = []

    def count(module: torch.nn.Module, *_) -> None:
        if isinstance(module, TimeMLP):
            calls.append(1)

    handle = register_module_forward_hook(count)
    try:
        for nfe in (1, 2, 4):
            calls.clear()
            result.generate(torch.randn(16, 2), nfe)
            assert len(calls) == nfe
    finally:
        handle.remove()


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown consistency method"):
        train_consistency("sct", steps=1)


def test_cd_converges_on_the_exact_teacher():
    # A small budget (seconds): a coarse grid (N = 8) propagates the boundary condition fast.
    mixture, _ = ring_teacher()
    eps = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    true = mixture.sample(2000, torch.Generator().manual_seed(2))
    small = replace(DEFAULTS["cd"], num_scales=8, batch_size=128, hidden=64, lr=3e-3)
    x_untrained = train_consistency("cd", steps=1, config=small).generate(eps, 1)
    untrained = energy_distance(x_untrained, true)
    x = train_consistency("cd", steps=500, seed=0, config=small).generate(eps, 1)
    ed = energy_distance(x, true)
    assert ed < 0.1 and ed < untrained / 20, (ed, untrained)
    assert mode_coverage(x, mixture).covered >= 4


def test_ct_converges_without_a_teacher():
    # Consistency training sees only mixture samples; 1.5k small updates (about 2 s) already move
    # the one-step map from the untrained ~1.46 to ~0.02 with every mode covered.
    mixture, _ = ring_teacher()
    eps = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    true = mixture.sample(2000, torch.Generator().manual_seed(2))
    small = replace(DEFAULTS["ct"], batch_size=128, hidden=128, eval_ema=0.95, num_scales=32)
    untrained = energy_distance(
        train_consistency("ct", steps=1, config=small).generate(eps, 1), true
    )
    x = train_consistency("ct", steps=1500, seed=0, config=small).generate(eps, 1)
    ed = energy_distance(x, true)
    assert ed < 0.05 and ed < untrained / 20, (ed, untrained)
    assert mode_coverage(x, mixture).covered >= 6


@pytest.mark.slow
def test_tuned_cd_beats_the_teachers_four_step_sampler():
    teacher_4, scores = ring_goal_scores(lambda: train_consistency("cd", seed=0))
    for nfe, (energy, all_modes) in scores.items():
        assert energy < teacher_4 and all_modes, (nfe, energy, teacher_4)
