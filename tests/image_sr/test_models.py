"""The package's SR teacher pieces: the conditional UNet, the sampler and the one-step student."""

import torch

from onestep.sr.models.resolvers import SamplerResolver, StudentResolver
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import SRTeacher, build_denoiser, psnr
from onestep.sr.models.unet import ConditionalUNet, tiny_unet
from onestep.sr.resolver import upsample
from onestep.sr.space import PixelSpace


def _net(**kw):
    return tiny_unet(widths=(8, 16), groups=4, **kw)


def test_untrained_lr_skip_net_returns_the_bicubic_input_exactly():
    net = _net()
    z_lr, x_t = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x_t, torch.full((2,), 500.0), z_lr), z_lr)
    plain = _net(lr_skip=False)
    assert not torch.allclose(plain(x_t, torch.full((2,), 500.0), z_lr), z_lr)


def test_net_rejects_mismatched_or_odd_inputs():
    net = _net()
    x = torch.randn(1, 3, 16, 16)
    try:
        net(x, torch.zeros(1), torch.randn(1, 3, 8, 8))
    except ValueError as err:
        assert "upsample the LR" in str(err)
    else:  # pragma: no cover
        raise AssertionError("shape mismatch accepted")
    try:
        net(torch.randn(1, 3, 15, 16), torch.zeros(1), torch.randn(1, 3, 15, 16))
    except ValueError as err:
        assert "multiple of 2" in str(err)
    else:  # pragma: no cover
        raise AssertionError("odd size accepted")


def test_conditional_unet_save_load_round_trip(tmp_path):
    net = _net()
    torch.nn.init.normal_(net.unet.conv_out.weight)  # non-trivial output
    net.save(tmp_path / "unet")
    back = ConditionalUNet.load(tmp_path / "unet")
    x, z = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    t = torch.tensor([300.0])
    torch.testing.assert_close(back(x, t, z), net(x, t, z))


def test_sampler_and_student_resolvers_shapes_and_determinism():
    denoiser = build_denoiser(_net())
    lr = torch.rand(2, 3, 4, 4)
    teacher = SamplerResolver(denoiser, PixelSpace(), scale=4, steps=3, seed=1)
    out = teacher(lr)
    assert out.shape == (2, 3, 16, 16) and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, teacher(lr))
    student = StudentResolver(OneStepStudent.from_teacher(denoiser), PixelSpace(), scale=4)
    # an untrained lr-skip student is the bicubic image (clamped)
    torch.testing.assert_close(student(lr), upsample(lr, 4).clamp(0, 1))


def test_student_is_a_trainable_copy_of_the_teacher():
    denoiser = build_denoiser(_net()).requires_grad_(False)
    student = OneStepStudent.from_teacher(denoiser)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in denoiser.parameters())
    assert student.process is student.denoiser.process


def test_teacher_training_step_lowers_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    teacher = SRTeacher(net=_net(), lr=3e-3)
    hr = torch.rand(4, 3, 16, 16)
    batch = {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}
    opt = teacher.configure_optimizers()
    losses = []
    for i in range(60):
        torch.manual_seed(i % 4)  # the same four (t, eps) draws over and over
        loss = teacher.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert sum(losses[-8:]) < 0.7 * sum(losses[:8])


def test_psnr_matches_the_formula():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full((1, 3, 4, 4), 0.1)
    torch.testing.assert_close(psnr(a, b), torch.tensor([20.0]))
