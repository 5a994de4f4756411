"""``ConsistencyDistillation``: targets (CD, LCM CFG, CT, TSCD), EMA, isolation, LoRA, export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close

from onestep.core import lora, noise
from onestep.core.data.noise import NoiseDataModule
from onestep.core.methods.builders import GMMData
from onestep.core.methods.consistency import ConsistencyDistillation
from onestep.core.testing import (
    assert_params_changed,
    assert_params_unchanged,
    gmm_teacher,
    quiet_trainer,
    snapshot_params,
    tiny_denoiser,
)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")


def _module(**kwargs) -> ConsistencyDistillation:
    process = noise.flow()
    kwargs.setdefault("teacher", gmm_teacher("ring", process)[1])
    student = tiny_denoiser(2, process, "x0", hidden=16, cond_dim=kwargs.pop("cond_dim", 0))
    return ConsistencyDistillation(student, **kwargs)


def _ddim(process, x, x0, t, s):
    """DDIM from t to s with the x0 estimate x0 (written out here, independent of ode_step)."""
    a_t, s_t = process.alpha(t)[:, None], process.sigma(t)[:, None]
    a_s, s_s = process.alpha(s)[:, None], process.sigma(s)[:, None]
    return a_s * x0 + s_s * (x - a_t * x0) / s_t


def test_cd_target_is_one_teacher_ddim_step():
    m = _module(mode="cd", solver="ddim")
    process, teacher = m.process, m.teacher
    x0, eps = torch.randn(8, 2), torch.randn(8, 2)
    t_next, t_cur = torch.rand(8) * 0.5 + 0.4, torch.rand(8) * 0.3
    x_next = process.add_noise(x0, eps, t_next)
    x_cur = m.previous_point(x0, eps, x_next, t_next, t_cur, None)
    assert teacher is not None
    assert_close(x_cur, _ddim(process, x_next, teacher(x_next, t_next), t_next, t_cur))


def test_lcm_cfg_target_uses_the_guided_teacher():
    m = _module(mode="cd", solver="ddim", guidance_scale=3.0, uncond=-1, cond_dim=8)
    process, teacher = m.process, m.teacher
    assert teacher is not None
    x0, eps = torch.randn(8, 2), torch.randn(8, 2)
    labels = torch.arange(8)
    t_next, t_cur = torch.full((8,), 0.6), torch.full((8,), 0.4)
    x_next = process.add_noise(x0, eps, t_next)
    x_cur = m.previous_point(x0, eps, x_next, t_next, t_cur, labels)
    x0_c, x0_u = teacher(x_next, t_next, labels), teacher(x_next, t_next, torch.full((8,), -1))
    guided = x0_u + 3.0 * (x0_c - x0_u)
    assert_close(x_cur, _ddim(process, x_next, guided, t_next, t_cur))


def test_lcm_random_guidance_range():
    m = _module(mode="cd", guidance_range=(2.0, 4.0), uncond=-1, cond_dim=8)
    w = m.guidance_weights(torch.zeros(256, 2))
    assert bool(((w >= 2.0) & (w <= 4.0)).all()) and float(w.std()) > 0.3
    with pytest.raises(ValueError, match="uncond"):
        _module(mode="cd", guidance_scale=2.0)


def test_ct_target_shares_x0_and_eps():
    m = _module(mode="ct", teacher=None, ema_decay=0.0)
    x0, eps = torch.randn(8, 2), torch.randn(8, 2)
    t_next, t_cur = torch.full((8,), 0.7), torch.full((8,), 0.2)
    x_next = m.process.add_noise(x0, eps, t_next)
    x_cur = m.previous_point(x0, eps, x_next, t_next, t_cur, None)
    assert_close(x_cur, 0.8 * x0 + 0.2 * eps)
    assert m.target is None  # iCT: theta^- = stopgrad(theta)
    online, target = m.outputs(x_next, t_next, x_cur, t_cur, None)
    assert_close(target, m.student(x_cur, t_cur))
    assert online.requires_grad and not target.requires_grad


def test_tscd_maps_both_sides_to_the_segment_edge():
    m = _module(mode="ct", teacher=None, segments=4)
    x_next, x_cur = torch.randn(3, 2), torch.randn(3, 2)
    t_next, t_cur = torch.tensor([0.3, 0.6, 0.9]), torch.tensor([0.2, 0.55, 0.8])
    edge = torch.tensor([0.25, 0.5, 0.75])
    online, target = m.outputs(x_next, t_next, x_cur, t_cur, None)
    f, p = m.student, m.process
    assert_close(online, _ddim(p, x_next, f(x_next, t_next), t_next, edge))
    assert m.target is not None
    t_cur_clamped = torch.tensor([0.25, 0.55, 0.8])
    expected = _ddim(p, x_cur, m.target(x_cur, t_cur_clamped), t_cur_clamped, edge)
    expected[0] = x_cur[0]  # t_cur clamped onto the edge: the target is the point itself
    assert_close(target, expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="needs a teacher"):
        _module(mode="cd", teacher=None)
    with pytest.raises(ValueError, match="unknown mode"):
        _module(mode="sct")
    with pytest.raises(ValueError, match="solver"):
        _module(solver="rk4")
    with pytest.raises(ValueError, match="ema_decay"):
        _module(ema_decay=1.0)
    with pytest.raises(ValueError, match="t_max below 1"):
        _module(solver="heun", t_max=1.0)


def _fit(m: ConsistencyDistillation, steps: int = 2, num_classes: int = 0) -> None:
    data = NoiseDataModule([2], 16, steps, num_classes=num_classes, real=GMMData("ring"))
    trainer = quiet_trainer()
    trainer.fit(m, datamodule=data)


def test_training_step_updates_student_ema_target_and_not_teacher():
    process = noise.flow()
    teacher = tiny_denoiser(2, process, "x0", hidden=16)
    m = ConsistencyDistillation(tiny_denoiser(2, process, "x0", hidden=16), teacher, ema_decay=0.9)
    assert m.target is not None
    teacher_before, student_before = snapshot_params(teacher), snapshot_params(m.student)
    target_before = snapshot_params(m.target)
    _fit(m, steps=1)
    assert_params_unchanged(teacher, teacher_before)
    assert_params_changed(m.student, student_before)
    for name, p in m.target.named_parameters():
        new = dict(m.student.named_parameters())[name].detach()
        assert_close(p, 0.9 * target_before[f"param:{name}"] + 0.1 * new)


def test_lcm_lora_trains_only_the_adapter(tmp_path):
    process = noise.flow()
    teacher = gmm_teacher("ring", process)[1]
    m = ConsistencyDistillation(
        tiny_denoiser(2, process, "x0", hidden=16), teacher, lora_rank=2, ema_decay=0.5
    )
    net: torch.nn.Module = m.student.denoiser.net  # pyright: ignore[reportAssignmentType,reportAttributeAccessIssue]
    assert lora.has_lora(net)
    base = {k: v.clone() for k, v in net.state_dict().items() if "lora_" not in k}
    _fit(m, steps=2)
    after = net.state_dict()
    for k, v in base.items():
        assert torch.equal(after[k], v), k
    assert any(
        not torch.equal(p, torch.zeros_like(p)) for n, p in net.named_parameters() if "lora_B" in n
    )
    out = m.export_student(tmp_path / "cm.safetensors")
    assert out.exists()


def test_checkpoint_drops_the_teacher():
    process = noise.flow()
    m = ConsistencyDistillation(
        tiny_denoiser(2, process, "x0", hidden=16), tiny_denoiser(2, process, "x0", hidden=16)
    )
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert any(k.startswith("target.") for k in ckpt["state_dict"])
    m.on_load_checkpoint(ckpt)
    m.load_state_dict(ckpt["state_dict"])


def test_ict_curriculum_grows_the_grid():
    m = _module(mode="ct", teacher=None, ema_decay=0.0, ict_curriculum=True, grid="karras")
    m.hparams["total_steps"] = 8
    _fit(m, steps=8)
    assert m.grid.num_scales > 10
