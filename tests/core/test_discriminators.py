import pytest
import torch
from torch import nn
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.discriminators import DenoiserFeatureHead, SmallDiscriminator, time_features
from onestep.core.objectives import gan_generator_loss
from onestep.core.testing import TinyMLP, tiny_denoiser


class ConvBackbone(nn.Module):
    """A tiny image 'fake score' net with a named bottleneck."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.SiLU())
        self.mid = nn.Conv2d(8, 6, 3, padding=1)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(6, 3, 3, padding=1))

    def forward(self, x, t):
        return self.up(self.mid(self.down(x)) + t.reshape(-1, 1, 1, 1))


def test_hook_reads_the_named_layer():
    net = ConvBackbone()
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    with torch.no_grad():
        manual = net.mid(net.down(x))  # the bottleneck, by hand, before any hook exists
    head = DenoiserFeatureHead(net, "mid", channels=6, patch=True)
    out = net(x, t)
    assert out.shape == x.shape
    assert_close(head.features, manual)
    logits = head()
    assert logits.shape == (2, 4, 4)  # one logit per bottleneck position
    assert_close(logits, head.head(manual.movedim(1, -1)).squeeze(-1))
    pooled = DenoiserFeatureHead(net, "mid", channels=6)
    pooled.head.load_state_dict(head.head.state_dict())
    net(x, t)
    assert_close(pooled(), logits.mean(dim=(1, 2)))
    # a new input replaces the captured features
    net(2 * x, t)
    assert not torch.allclose(head.features, manual)


def test_head_on_denoiser_mlp_features_and_gradients_reach_head_and_student():
    fake_score = tiny_denoiser(2, noise.flow(), hidden=16)
    head = DenoiserFeatureHead(fake_score, "net.net.3", channels=16)
    x = torch.randn(5, 2, requires_grad=True)  # stands in for a student sample
    t = torch.rand(5)
    fake_score(x, t)
    logits = head()
    assert logits.shape == (5,)
    gan_generator_loss(logits).mean().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in head.head.parameters())
    # the backbone is shared, not owned: the head's parameters are only its own
    assert {n for n, _ in head.named_parameters()} == {
        "head.0.weight",
        "head.0.bias",
        "head.2.weight",
        "head.2.bias",
    }


def test_head_called_like_a_discriminator_runs_the_backbone():
    fake_score = tiny_denoiser(2, noise.flow(), hidden=16, cond_dim=3)
    head = DenoiserFeatureHead(fake_score, "net.net.1", channels=16)
    x_t, t, cond = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, -1])
    logits = head(x_t, t, cond)  # the methods' discriminator(x_t, t, cond) convention
    with torch.no_grad():
        net = fake_score.net
        assert isinstance(net, TinyMLP)
        angle = t[:, None] * net.freqs
        onehot = torch.nn.functional.one_hot(cond % 4, 4)[:, :3].float()
        inputs = torch.cat([x_t, torch.sin(angle), torch.cos(angle), onehot], dim=1)
        first = next(iter(net.net))
        manual = torch.nn.functional.silu(first(inputs))  # functional: does not fire the hook
    assert_close(head.features, manual)
    assert_close(logits, head(features=manual))
    assert logits.shape == (4,)


def test_head_errors_and_remove():
    net = ConvBackbone()
    with pytest.raises(ValueError, match="no submodule 'bottleneck'"):
        DenoiserFeatureHead(net, "bottleneck", channels=6)
    head = DenoiserFeatureHead(net, "mid", channels=5)
    with pytest.raises(RuntimeError, match="no features captured"):
        head()
    net(torch.randn(1, 3, 8, 8), torch.rand(1))
    with pytest.raises(ValueError, match="pass channels=6"):
        head()
    good = DenoiserFeatureHead(net, "mid", channels=6)
    good.remove()
    net(torch.randn(1, 3, 8, 8), torch.rand(1))
    with pytest.raises(RuntimeError, match="no features captured"):
        good()


def test_small_mlp_discriminator_shapes_and_time_conditioning():
    disc = SmallDiscriminator(3, hidden=16, time_conditioning=True)
    x = torch.randn(4, 3)
    t0, t1 = torch.zeros(4), torch.full((4,), 0.7)
    out = disc(x, t0)
    assert out.shape == (4,)
    assert not torch.allclose(out, disc(x, t1))  # t changes the logits
    with pytest.raises(ValueError, match="pass t"):
        disc(x)
    with pytest.raises(ValueError, match=r"expects \[B, D\]"):
        disc(torch.randn(4, 5), t0)
    plain = SmallDiscriminator(3, hidden=16)
    assert_close(plain(x, t0), plain(x, t1))  # unconditioned: t is ignored


def test_small_conv_discriminator_patch_logits_and_gradients():
    disc = SmallDiscriminator(3, hidden=8, conv=True, time_conditioning=True, patch=True)
    x = torch.randn(2, 3, 16, 12, requires_grad=True)
    t = torch.rand(2)
    logits = disc(x, t)
    assert logits.shape == (2, 4, 3)
    pooled = SmallDiscriminator(3, hidden=8, conv=True, time_conditioning=True)
    pooled.load_state_dict(disc.state_dict())
    assert_close(pooled(x, t, None), logits.mean(dim=(1, 2)))  # default: one logit per sample
    logits.mean().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert all(p.grad is not None for p in disc.parameters())
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        disc(torch.randn(2, 3), torch.rand(2))


def test_time_features():
    f = time_features(torch.tensor([0.0, 0.5]), 8)
    assert f.shape == (2, 8)
    assert_close(f[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match="even"):
        time_features(torch.zeros(1), 3)
