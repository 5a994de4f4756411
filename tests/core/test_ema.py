import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from onestep.core.ema import EMA, ema_update_
from onestep.core.testing import quiet_trainer

# -- ema_update_ --------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.bn, self.lin2 = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.lin2(self.bn(self.lin1(x)))


def _net() -> Net:
    return Net()


def test_ema_update_matches_hand_computation():
    target, source = _net(), _net()
    with torch.no_grad():
        for p in target.parameters():
            p.fill_(1.0)
        for p in source.parameters():
            p.fill_(3.0)
        src_buffers = dict(source.named_buffers())
        src_buffers["bn.running_mean"].fill_(5.0)
        src_buffers["bn.num_batches_tracked"] += 7
    before = {n: p.detach().clone() for n, p in source.named_parameters()}
    ema_update_(target, source, decay=0.9)
    for p in target.parameters():
        assert_close(p, torch.full_like(p, 0.9 * 1.0 + 0.1 * 3.0))  # 1.2
    tgt_buffers = dict(target.named_buffers())
    assert_close(tgt_buffers["bn.running_mean"], torch.full((4,), 5.0))  # buffers are copied
    assert int(tgt_buffers["bn.num_batches_tracked"]) == 7
    for n, p in source.named_parameters():
        assert torch.equal(p, before[n])  # the source is untouched
    ema_update_(target, source, decay=0.0)
    assert_close(target.lin1.weight, source.lin1.weight)
    assert not target.lin1.weight.requires_grad or target.lin1.weight.grad is None


def test_ema_update_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ema_update_(_net(), _net(), decay=1.5)
    with pytest.raises(ValueError, match="differ in parameters"):
        ema_update_(_net(), nn.Linear(3, 2), decay=0.5)
    with pytest.raises(ValueError, match="every_n_steps"):
        EMA(every_n_steps=0)


# -- the callback -------------------------------------------------------------------------------


class Tiny(L.LightningModule):
    """A student to average, a frozen teacher that must not be, weights seen in evaluation."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.student = _net()
        self.teacher = nn.Linear(3, 2).requires_grad_(False)
        self.trained: list[dict[str, torch.Tensor]] = []
        self.evaluated: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        # Data seeded by the step, not by the loader position: Lightning restarts the loader
        # after a resume, so this is what makes a resumed run see the same batches.
        gen = torch.Generator().manual_seed(self.global_step)
        x, y = torch.randn(4, 3, generator=gen), torch.randn(4, 2, generator=gen)
        return F.mse_loss(self.student(x), y + self.teacher(x))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.trained.append({n: t.detach().clone() for n, t in _state(self.student).items()})

    def validation_step(self, batch, batch_idx):
        self.evaluated.append(self.student.lin1.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1, momentum=0.9)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _loader() -> DataLoader:
    gen = torch.Generator().manual_seed(123)
    x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 2, generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)  # 4 steps per epoch


class SaveDuringValidation(L.Callback):
    def __init__(self, path):
        self.path = path

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if batch_idx == 0:
            trainer.save_checkpoint(self.path)


def _fit(tmp_path, steps: int, ema: EMA, ckpt_path=None, extra: tuple[L.Callback, ...] = ()):
    model = Tiny()
    trainer = quiet_trainer(
        max_steps=steps,
        callbacks=[ema, *extra],
        enable_checkpointing=True,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, _loader(), ckpt_path=ckpt_path)
    return trainer, model


def test_callback_follows_the_warmup_ema_recursion(tmp_path):
    ema = EMA(0.95, module_attr="student")
    init = {n: t.detach().clone() for n, t in _state(Tiny().student).items()}
    _, model = _fit(tmp_path, 6, ema)
    assert ema.num_updates == 6 and len(model.trained) == 6

    expected = {n: t.clone() for n, t in init.items() if t.is_floating_point()}
    for n_done, live in enumerate(model.trained):
        d = min(0.95, (1 + n_done) / (10 + n_done))
        for name in expected:
            if "running" in name:  # buffers: copied
                expected[name] = live[name].clone()
            else:
                expected[name] = d * expected[name] + (1 - d) * live[name]
    averaged = ema.averaged_parameters
    assert set(averaged) == set(init)  # only the student, never the teacher
    for name, value in expected.items():
        assert_close(averaged[name], value)
    # The average lags the live weights.
    assert not torch.allclose(averaged["lin1.weight"], model.student.lin1.weight)

    frozen = ema.ema_module
    assert_close(dict(frozen.named_parameters())["lin1.weight"], averaged["lin1.weight"])
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_every_n_steps_without_warmup(tmp_path):
    ema = EMA(0.5, module_attr="student", warmup=False, every_n_steps=2)
    init = Tiny().student.lin1.weight.detach().clone()
    _, model = _fit(tmp_path, 4, ema)
    assert ema.num_updates == 2
    w2, w4 = model.trained[1]["lin1.weight"], model.trained[3]["lin1.weight"]
    assert_close(ema.averaged_parameters["lin1.weight"], 0.25 * init + 0.25 * w2 + 0.5 * w4)


def test_evaluation_runs_on_the_average_and_restores_live_weights(tmp_path):
    ema = EMA(0.9, module_attr="student")
    trainer, model = _fit(tmp_path, 4, ema, extra=(SaveDuringValidation(tmp_path / "val.ckpt"),))
    live = model.student.lin1.weight.detach().clone()
    averaged = ema.averaged_parameters["lin1.weight"]
    assert not torch.allclose(live, averaged)
    trainer.validate(model, _loader(), verbose=False)
    assert len(model.evaluated) == 4
    for seen in model.evaluated:
        assert torch.equal(seen, averaged)
    assert torch.equal(model.student.lin1.weight, live)
    assert torch.equal(ema.averaged_parameters["lin1.weight"], averaged)
    # A checkpoint written mid-validation holds the live weights, and the average in its state.
    saved = torch.load(tmp_path / "val.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["student.lin1.weight"], live)
    assert torch.equal(saved["callbacks"][ema.state_key]["averaged"]["lin1.weight"], averaged)

    off = EMA(0.9, module_attr="student", swap_in_eval=False)
    trainer, model = _fit(tmp_path, 4, off)
    trainer.validate(model, _loader(), verbose=False)
    assert torch.equal(model.evaluated[0], model.student.lin1.weight)


def test_resume_continues_the_same_average(tmp_path):
    straight_ema = EMA(0.9, module_attr="student")
    _, straight = _fit(tmp_path / "straight", 8, straight_ema)

    first_ema = EMA(0.9, module_attr="student")
    trainer, _ = _fit(tmp_path / "first", 4, first_ema)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed_ema = EMA(0.9, module_attr="student")
    trainer, resumed = _fit(tmp_path / "resumed", 8, resumed_ema, ckpt_path=ckpt)

    assert trainer.global_step == 8 and resumed_ema.num_updates == 8
    assert_close(resumed.student.lin1.weight, straight.student.lin1.weight)  # same training
    for name, value in straight_ema.averaged_parameters.items():
        assert_close(resumed_ema.averaged_parameters[name], value, rtol=0, atol=0)

    # Without the callback's state the average restarts and ends elsewhere.
    state = torch.load(ckpt, weights_only=False)
    assert resumed_ema.state_key in state["callbacks"]
    del state["callbacks"][resumed_ema.state_key]
    torch.save(state, tmp_path / "no_ema.ckpt")
    fresh_ema = EMA(0.9, module_attr="student")
    _fit(tmp_path / "fresh", 8, fresh_ema, ckpt_path=tmp_path / "no_ema.ckpt")
    assert not torch.allclose(
        fresh_ema.averaged_parameters["lin1.weight"],
        straight_ema.averaged_parameters["lin1.weight"],
    )


def test_whole_module_and_bad_attribute(tmp_path):
    ema = EMA(0.9, module_attr=None)
    trainer, model = _fit(tmp_path, 2, ema)
    averaged = ema.averaged_parameters
    assert "student.lin1.weight" in averaged and "teacher.weight" in averaged
    assert_close(averaged["teacher.weight"], model.teacher.weight)  # frozen: average = itself
    copy = ema.ema_module
    assert isinstance(copy, Tiny) and copy is not model and model.trainer is trainer
    assert_close(copy.student.lin1.weight, averaged["student.lin1.weight"])

    with pytest.raises(AttributeError, match="no attribute 'generator'"):
        _fit(tmp_path, 1, EMA(module_attr="generator"))


def test_half_precision_weights_are_averaged_in_float32():
    holder = nn.Module()
    holder.student = nn.Linear(2, 2).to(torch.bfloat16)
    ema = EMA(0.999, module_attr="student", warmup=False)
    module = ema._ensure(holder)  # pyright: ignore[reportArgumentType]
    start = holder.student.weight.detach().double()
    with torch.no_grad():
        holder.student.weight.add_(1.0)
    for _ in range(10):
        ema.update(module)
    averaged = ema.averaged_parameters["weight"]
    assert averaged.dtype == torch.float32
    # 10 steps of 0.1% towards +1: a bf16 average (8 mantissa bits) would not have moved.
    new = holder.student.weight.detach().double()
    expected = 0.999**10 * start + (1 - 0.999**10) * new
    assert_close(averaged.double(), expected, atol=1e-5, rtol=0)
