"""OSEDiffVSD: one update touches only the student and the fake score; VSD is the DM gradient."""

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from onestep.core.lora import has_lora
from onestep.sr.data import bicubic_downsample
from onestep.sr.losses import gradient_l1, perceptual_loss, ssim_loss
from onestep.sr.methods.osediff import OSEDiffVSD
from onestep.sr.models.teacher import build_denoiser
from onestep.sr.models.unet import tiny_unet


def _teacher():
    net = tiny_unet(widths=(8, 16), groups=4, seed=0)
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.02)  # a teacher that is not identity
    return build_denoiser(net).requires_grad_(False).eval()


def _loader(n=4, size=16):
    hr = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = [{"hr": hr[i], "lr": bicubic_downsample(hr[i], 4)} for i in range(n)]
    return DataLoader(data, batch_size=2)  # pyright: ignore[reportArgumentType]


def _fit(module, loader, steps):
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, loader)
    return trainer


def test_one_iteration_changes_student_and_fake_lora_only():
    module = OSEDiffVSD(teacher=_teacher(), lr_student=1e-3, lr_fake=1e-3)
    assert has_lora(module.fake_score)
    teacher0 = copy.deepcopy(module.teacher.state_dict())
    student0 = copy.deepcopy(module.student.state_dict())
    fake0 = {n: p.clone() for n, p in module.fake_score.named_parameters()}
    _fit(module, _loader(), steps=2)  # one iteration = a fake step + a student step
    assert all(torch.equal(teacher0[k], v) for k, v in module.teacher.state_dict().items())
    assert any(not torch.equal(student0[k], v) for k, v in module.student.state_dict().items())
    changed = [n for n, p in module.fake_score.named_parameters() if not torch.equal(fake0[n], p)]
    assert changed and all("lora_" in n for n in changed)


def test_vsd_gradient_vanishes_when_the_fake_score_equals_the_teacher():
    """VSD's gradient is w (x0_fake - x0_real): zero at init (LoRA B = 0), non-zero after."""
    module = OSEDiffVSD(teacher=_teacher(), perceptual="none")
    z = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    cond = torch.rand(2, 3, 16, 16) * 2 - 1
    module.rng.reseed(0)
    (g0,) = torch.autograd.grad(module.student_loss(z, cond).sum(), z)
    assert g0.abs().max() == 0
    for name, p in module.fake_score.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    module.rng.reseed(0)
    (g1,) = torch.autograd.grad(module.student_loss(z, cond).sum(), z)
    assert g1.abs().max() > 0


def test_perceptual_choice_and_offline_substitute():
    assert perceptual_loss("auto")[0] == "ssim-grad"
    assert perceptual_loss("none") == ("none", None)
    with pytest.raises(ValueError, match="lpips_weights"):
        perceptual_loss("lpips")
    with pytest.raises(ValueError, match="unknown perceptual"):
        perceptual_loss("vgg")
    x = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(ssim_loss(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim_loss(x, noisy) > 0.1).all() and (gradient_l1(x, noisy) > 0).all()


def test_short_fit_beats_bicubic_on_its_training_crops():
    torch.manual_seed(0)
    module = OSEDiffVSD(teacher=_teacher(), lr_student=3e-3, vsd_weight=0.1)
    loader = _loader(n=4, size=16)
    batch = next(iter(loader))
    sr0 = module.resolver()(batch["lr"])
    _fit(module, loader, steps=120)
    sr1 = module.resolver()(batch["lr"])
    err0 = (sr0 - batch["hr"]).square().mean()
    err1 = (sr1 - batch["hr"]).square().mean()
    assert err1 < 0.9 * err0
