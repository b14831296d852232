"""CaGNet's networks (projects/CaGNet, work in progress): shapes, the released forms of the
contextual latent, its KL and the L1 'lsgan' loss, on hand-made cases."""
import os
import sys

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "CaGNet"))
from cagnet.modules import ContextualGenerator, ContextualModule, Discriminator, gan_l1_loss, masked_kl  # noqa: E402

sys.path.pop(0)


def test_contextual_module_shapes_and_mu_at_test():
    torch.manual_seed(0)
    module = ContextualModule(dim=16, hidden=8)
    h = torch.randn(2, 16, 9, 11)
    refined, z, mu, logvar = module(h)
    assert refined.shape == z.shape == mu.shape == logvar.shape == h.shape
    assert (logvar >= 0).all() and (refined > 0).all() and (refined < 1).all()
    module.eval()
    refined, z, mu, _ = module(h)
    assert torch.equal(z, mu)
    torch.testing.assert_close(refined, torch.sigmoid(h + h * torch.sigmoid(mu)))


def test_the_selector_weights_each_scale_per_pixel():
    """A scale the selector switches off (weight sigmoid(-inf) = 0 after its ReLU: sigmoid(0) = 0.5
    at least, as released) still contributes half: the selector only rescales between 0.5 and 1."""
    module = ContextualModule(dim=4, hidden=4)
    with torch.no_grad():
        module.selector[0].weight.fill_(-100.0)  # every selector output 0 after the ReLU
    stacked = torch.rand(1, 12, 5, 5)
    weights = torch.sigmoid(module.selector(stacked))
    assert torch.allclose(weights, torch.full_like(weights, 0.5))


def test_masked_kl_by_hand():
    mu = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    logvar = torch.zeros_like(mu)
    valid = torch.tensor([[[True, False]]])
    assert masked_kl(mu, logvar, valid).item() == pytest.approx(0.5)  # -0.5 * (1 + 0 - 1 - 1) on one pixel
    assert masked_kl(mu, logvar, ~valid).item() == pytest.approx(0.0)


def test_generator_and_discriminator_shapes():
    generator = ContextualGenerator(embed_dim=6, feature_dim=5)
    out = generator(torch.randn(2, 6, 3, 4), torch.randn(2, 5, 3, 4))
    assert out.shape == (2, 5, 3, 4) and (out > 0).all() and (out < 1).all()
    logits, prob = Discriminator(feature_dim=5, num_classes=7, hidden=16)(out)
    assert logits.shape == (2, 7, 3, 4) and prob.shape == (2, 1, 3, 4)


def test_gan_loss_is_an_l1_distance_as_released():
    prob = torch.tensor([[[[0.25, 0.75]]]])
    assert gan_l1_loss(prob, real=True).item() == pytest.approx((0.75 + 0.25) / 2)
    assert gan_l1_loss(prob, real=False, valid=torch.tensor([[[1.0, 0.0]]])).item() == pytest.approx(0.25)
