import pytest
import torch
from torch import nn
from torch.testing import assert_close

from onestep.core.objectives import gan_discriminator_loss, gan_generator_loss, r1_penalty
from onestep.core.testing import grad_of


def test_ns_generator_loss_value_and_gradient():
    logits = torch.randn(7, dtype=torch.float64)
    assert_close(gan_generator_loss(logits), -torch.log(torch.sigmoid(logits)))
    (g,) = grad_of(gan_generator_loss, logits)
    assert_close(g, -torch.sigmoid(-logits))  # d softplus(-l) / dl


def test_ns_discriminator_gradients():
    real, fake = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    loss = gan_discriminator_loss(real, fake)
    expected = -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake))
    assert_close(loss, expected)
    g_real, g_fake = grad_of(gan_discriminator_loss, real, fake)
    assert_close(g_real, torch.sigmoid(real) - 1)
    assert_close(g_fake, torch.sigmoid(fake))


def test_hinge_margins():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, -0.5, 1.0])
    assert_close(gan_discriminator_loss(real, fake, "hinge"), torch.tensor([0.0, 1.0, 4.0]))
    g_real, g_fake = grad_of(lambda r, f: gan_discriminator_loss(r, f, "hinge"), real, fake)
    # beyond the margin (|logit| > 1 on the right side) there is no gradient
    assert_close(g_real, torch.tensor([0.0, -1.0, -1.0]))
    assert_close(g_fake, torch.tensor([0.0, 1.0, 1.0]))
    assert_close(gan_generator_loss(fake, "hinge"), -fake)
    (g,) = grad_of(lambda f: gan_generator_loss(f, "hinge"), fake)
    assert_close(g, -torch.ones(3))


@pytest.mark.parametrize("kind", ["ns", "hinge"])
def test_patch_logits_are_averaged(kind):
    real, fake = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    per_patch = gan_discriminator_loss(real.reshape(-1), fake.reshape(-1), kind).reshape(4, 15)
    assert_close(gan_discriminator_loss(real, fake, kind), per_patch.mean(1))
    gen = gan_generator_loss(fake.reshape(-1), kind).reshape(4, 15).mean(1)
    assert_close(gan_generator_loss(fake, kind), gen)


def test_r1_on_linear_discriminator_is_weight_norm():
    disc = nn.Linear(6, 1)
    x = torch.randn(5, 6, requires_grad=True)
    penalty = r1_penalty(disc(x).squeeze(1), x)
    assert_close(penalty, disc.weight.square().sum().expand(5))
    # create_graph=True: the penalty trains the discriminator, d/dw ||w||^2 = 2 w
    penalty.mean().backward()
    assert disc.weight.grad is not None
    assert_close(disc.weight.grad, 2 * disc.weight.detach())


def test_r1_per_sample_on_quadratic_and_patch_logits():
    x = torch.randn(4, 2, 3, requires_grad=True)
    logits = (x**2).sum(dim=2)  # [B, 2] patch logits; mean over patches = 0.5 sum x^2
    assert_close(r1_penalty(logits, x), (x.detach() ** 2).sum(dim=(1, 2)))


def test_errors():
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
        gan_generator_loss(torch.zeros(2), "wgan")
    with pytest.raises(ValueError, match="must match"):
        gan_discriminator_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(2), torch.zeros(2, 3))
    x = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="B = 2"):
        r1_penalty(x.sum().reshape(1), x)
