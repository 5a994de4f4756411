"""``ContinuousConsistency`` (sCD / sCT): isolation, checkpoints, teacher velocity in TrigFlow."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch

from onestep.core import noise
from onestep.core.data.noise import NoiseDataModule
from onestep.core.methods.builders import GMMData, gmm_teacher_module
from onestep.core.methods.scm import (
    AdaptiveWeight,
    ContinuousConsistency,
    teacher_trigflow_velocity,
)
from onestep.core.methods.scm_builders import trigflow_mlp_student
from onestep.core.testing import (
    TinyMLP,
    assert_params_changed,
    assert_params_unchanged,
    gmm_teacher,
    quiet_trainer,
    snapshot_params,
)

warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _fit(model: ContinuousConsistency, tmp_path, batches: int = 4) -> L.Trainer:
    trainer = quiet_trainer(default_root_dir=tmp_path)
    data = NoiseDataModule(shape=[2], batch_size=32, num_batches=batches, real=GMMData("ring"))
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.mark.parametrize("mode", ["scd", "sct"])
def test_step_trains_student_weighting_and_ema_only(mode, tmp_path):
    teacher = gmm_teacher_module("ring", "trig")
    teacher.register_parameter("probe", torch.nn.Parameter(torch.ones(3)))
    model = ContinuousConsistency(
        trigflow_mlp_student(hidden=16, seed=1),
        teacher if mode == "scd" else None,
        mode=mode,
        weighting=AdaptiveWeight(8),
        lr=1e-2,
        ema_decay=0.5,
        warmup_steps=2,
    )
    assert model.ema is not None and model.weighting is not None
    parts = {"s": model.student, "w": model.weighting, "e": model.ema, "t": teacher}
    before = {name: snapshot_params(part) for name, part in parts.items()}
    trainer = _fit(model, tmp_path)
    assert_params_changed(model.student, before["s"])
    assert_params_changed(model.weighting, before["w"])
    assert_params_changed(model.ema, before["e"])
    assert_params_unchanged(teacher, before["t"])
    if mode == "scd":
        assert not any(p.requires_grad for p in teacher.parameters())
        model.train()
        assert not teacher.training  # frozen in eval mode whatever the module's mode
    assert model.iteration == 4
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("ema.") for k in state)
    out = model.export_student(tmp_path / "student.safetensors")
    assert out.exists()


def test_constructor_errors():
    student = trigflow_mlp_student(hidden=8)
    with pytest.raises(ValueError, match="teacher="):
        ContinuousConsistency(student, None, mode="scd")
    with pytest.raises(ValueError, match="unknown mode"):
        ContinuousConsistency(student, None, mode="ct")
    with pytest.raises(TypeError, match="TrigFlowStudent"):
        ContinuousConsistency(TinyMLP(2), None, mode="sct")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="tangent_cos_power"):
        ContinuousConsistency(student, None, mode="sct", tangent_cos_power=-0.5)


def test_teacher_velocity_is_process_independent():
    """The exact ring teacher under flow, queried at equal SNR, gives TrigFlow's velocity."""
    trig_teacher = gmm_teacher("ring", noise.trig(0.5))[1].double()
    flow_teacher = gmm_teacher("ring", noise.flow())[1].double()
    x_t = torch.randn(16, 2, dtype=torch.float64)
    tau = 0.05 + 1.45 * torch.rand(16, dtype=torch.float64)
    a = teacher_trigflow_velocity(trig_teacher, x_t, tau, 0.5)
    b = teacher_trigflow_velocity(flow_teacher, x_t, tau, 0.5)
    torch.testing.assert_close(a, b)
    # Against the ODE itself: dx/dtau of the trig process, (pi/2)^-1 times dx/dt.
    torch.testing.assert_close(a, trig_teacher.velocity(x_t, tau * 2 / math.pi) / (math.pi / 2))
