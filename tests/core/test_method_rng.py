"""RectifiedFlow, MeanFlow and CTM draw their training randomness from a ``GlobalBatchRNG``.

* Two short runs with the same ``seed`` train to identical weights (whatever the global torch
  RNG holds); another ``seed`` trains to different ones.
* The DDP property at the RNG level: rank ``r`` of ``W`` (local batch ``B / W``) draws rows
  ``r::W`` of what one process draws for the global batch ``B`` at the same step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from onestep.core.data.noise import NoiseDataModule
from onestep.core.methods.builders import GMMData, gmm_teacher_module, tiny_denoiser_module
from onestep.core.methods.ctm import ConsistencyTrajectory, ctm_student_module
from onestep.core.methods.dm_random import micro_batch_iteration
from onestep.core.methods.meanflow import MeanFlow, meanflow_student_module
from onestep.core.methods.rectified_flow import TIME_SAMPLERS, RectifiedFlow
from onestep.core.testing import quiet_trainer

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")

STEPS = 3


def _rectified_flow(seed: int) -> RectifiedFlow:
    student = tiny_denoiser_module(2, "flow", "flow", hidden=16, seed=1)
    return RectifiedFlow(student, time_sampler="logit_normal", seed=seed)


def _meanflow(seed: int) -> MeanFlow:
    return MeanFlow(meanflow_student_module(hidden=16, seed=1), ratio=0.5, seed=seed)


def _ctm(seed: int) -> ConsistencyTrajectory:
    student = ctm_student_module(hidden=16, prediction="flow", seed=1)
    return ConsistencyTrajectory(student, gmm_teacher_module(), ema_decay=0.5, seed=seed)


BUILDERS: dict[str, Callable[[int], L.LightningModule]] = {
    "rectified_flow": _rectified_flow,
    "meanflow": _meanflow,
    "ctm": _ctm,
}


def _fit(build: Callable[[int], L.LightningModule], seed: int, global_seed: int, tmp_path):
    """``STEPS`` updates; the global torch RNG is set to ``global_seed`` first."""
    torch.manual_seed(global_seed)
    model = build(seed)
    data = NoiseDataModule([2], batch_size=8, num_batches=STEPS, real=GMMData())
    trainer = quiet_trainer(max_steps=STEPS, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert trainer.global_step == STEPS
    student: nn.Module = model.student  # pyright: ignore[reportAssignmentType]
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_same_weights_other_seed_other_weights(name: str, tmp_path):
    build = BUILDERS[name]
    first = _fit(build, seed=0, global_seed=1, tmp_path=tmp_path)
    again = _fit(build, seed=0, global_seed=2, tmp_path=tmp_path)  # global RNG plays no part
    other = _fit(build, seed=5, global_seed=1, tmp_path=tmp_path)
    assert first.keys() == again.keys() == other.keys()
    for k, v in first.items():
        assert torch.equal(v, again[k]), (name, k)
    assert any(not torch.equal(v, other[k]) for k, v in first.items()), name


# -- the DDP property at the RNG level --------------------------------------------------------


def _per_rank(
    module: RectifiedFlow | MeanFlow | ConsistencyTrajectory,
    draw: Callable[[int], tuple[Tensor, ...]],
    batch: int,
    world: int,
    step: int,
):
    """``draw(local_batch)`` for one process and for each rank of ``world``, all at ``step``."""
    rng = module.rng
    rng.rank, rng.world_size = 0, 1
    rng.reseed(step)
    single = draw(batch)
    ranks = []
    for r in range(world):
        rng.rank, rng.world_size = r, world
        rng.reseed(step)
        ranks.append(draw(batch // world))
    return single, ranks


#: The raw draws are exact slices, but an elementwise transform of them (sigmoid of a logit-normal
#: time) may differ by one float32 ulp between a tensor of 16 and one of 8: which elements fall
#: in a vectorised loop's scalar tail depends on the length and on the CPU's vector width. Two
#: ulps tell "the same random numbers" from different ones (those differ by far more).
ULP_RTOL = 2.5e-7


def _assert_rows(single: tuple[Tensor, ...], ranks: list[tuple[Tensor, ...]], world: int):
    for r, mine in enumerate(ranks):
        assert len(mine) == len(single)
        for got, full in zip(mine, single, strict=True):
            torch.testing.assert_close(got, full[r::world], rtol=ULP_RTOL, atol=0.0)
    # the ranks together hold every row of the global draw exactly once
    for i, full in enumerate(single):
        merged = torch.full_like(full, float("nan"))
        for r, mine in enumerate(ranks):
            merged[r::world] = mine[i]
        torch.testing.assert_close(merged, full, rtol=ULP_RTOL, atol=0.0)


@pytest.mark.parametrize("sampler", TIME_SAMPLERS)
@pytest.mark.parametrize("world", [2, 4])
def test_rectified_flow_times_are_rank_slices_of_the_global_draw(sampler: str, world: int):
    module = RectifiedFlow(tiny_denoiser_module(2, "flow", "flow", hidden=8), time_sampler=sampler)
    cpu = torch.device("cpu")
    single, ranks = _per_rank(module, lambda n: (module.sample_t(n, cpu),), 16, world, step=3)
    _assert_rows(single, ranks, world)
    (t,) = single
    assert bool(((t >= 0) & (t <= 1)).all())
    # a resumed run redraws the same times; the next step draws new ones
    module.rng.rank, module.rng.world_size = 0, 1
    module.rng.reseed(3)
    assert torch.equal(module.sample_t(16, cpu), t)
    module.rng.reseed(4)
    assert not torch.equal(module.sample_t(16, cpu), t)


@pytest.mark.parametrize("world", [2, 4])
def test_meanflow_times_and_noise_are_rank_slices_of_the_global_draw(world: int):
    module = MeanFlow(meanflow_student_module(hidden=8), ratio=0.5)
    like = torch.zeros(1, 3, dtype=torch.float64)

    def draw(n: int) -> tuple[Tensor, ...]:
        return module.draws(like.expand(n, 3))

    single, ranks = _per_rank(module, draw, 16, world, step=7)
    _assert_rows(single, ranks, world)
    r, t, e = single
    assert e.shape == (16, 3) and e.dtype == torch.float64
    assert bool((r <= t).all()) and bool((r < t).any()) and bool((r == t).any())


@pytest.mark.parametrize("world", [2, 4])
def test_ctm_times_and_noise_are_rank_slices_of_the_global_draw(world: int):
    student = ctm_student_module(hidden=8, prediction="flow")
    module = ConsistencyTrajectory(student, gmm_teacher_module(), s_zero_prob=0.5)
    like = torch.zeros(1, 2)

    def draw(n: int) -> tuple[Tensor, ...]:
        return module.draws(like.expand(n, 2))

    single, ranks = _per_rank(module, draw, 16, world, step=2)
    _assert_rows(single, ranks, world)
    t, s, u, eps = single
    assert eps.shape == (16, 2)
    hp = module.hparams
    assert bool(((t >= hp["t_min"]) & (t <= hp["t_max"])).all())
    assert bool(((s >= 0) & (s <= u) & (u <= t)).all()) and bool((s == 0).any())


# -- gradient accumulation: each micro-batch draws anew ---------------------------------------


@pytest.mark.parametrize("accumulate", [1, 3])
def test_micro_batches_of_one_accumulated_step_get_their_own_draws(accumulate: int, tmp_path):
    """With ``accumulate_grad_batches = k`` the k micro-batches of a step reseed differently."""
    module = _rectified_flow(seed=0)
    seen: list[int] = []
    reseed = module.rng.reseed

    def spy(iteration: int) -> None:
        seen.append(iteration)
        reseed(iteration)

    module.rng.reseed = spy  # pyright: ignore[reportAttributeAccessIssue]
    n_batches = 2 * accumulate + 1  # the epoch ends mid-accumulation
    data = NoiseDataModule([2], batch_size=8, num_batches=n_batches, real=GMMData())
    trainer = quiet_trainer(
        max_epochs=2, accumulate_grad_batches=accumulate, default_root_dir=tmp_path
    )
    trainer.fit(module, data)
    assert len(seen) == 2 * n_batches
    assert len(set(seen)) == len(seen), seen  # no two micro-batches share their draws
    assert seen[:accumulate] == list(range(accumulate))


def test_micro_batch_iteration_without_a_trainer_is_the_global_step():
    module = _rectified_flow(seed=0)
    assert micro_batch_iteration(module, batch_idx=5) == 0
