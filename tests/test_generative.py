"""zsi_d2.modeling.generative: MMD, relationship alignment and disentangler losses against hand-computed
values and explicit formulas; generator shapes, noise, gradients and eval determinism; the registry."""
import math

import pytest
import torch

from zsi_d2.modeling.generative import (
    DEFAULT_SIGMAS,
    FeatureDisentangler,
    GMMNGenerator,
    PrimitiveGenerator,
    RelationNet,
    build_generator,
    class_conditional_mmd,
    gaussian_kernel_matrix,
    mmd_loss,
    relationship_alignment_loss,
    softmax_kl,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------- MMD


def test_mmd_hand_computed_2x1():
    # x = {0, 1}, y = {0, 2}, one bandwidth v = 2: k(a, b) = exp(-(a - b)^2 / (2 * 2)) = exp(-(a - b)^2 / 4).
    #   mean Kxx = (1 + e^-1/4 + e^-1/4 + 1) / 4
    #   mean Kyy = (1 + e^-1   + e^-1   + 1) / 4        ((0 - 2)^2 / 4 = 1)
    #   mean Kxy = (k(0,0) + k(0,2) + k(1,0) + k(1,2)) / 4 = (1 + e^-1 + e^-1/4 + e^-1/4) / 4
    #   MMD^2 = Kxx + Kyy - 2 Kxy = (2 - 2 e^-1/4) / 4 = (1 - e^-1/4) / 2 = 0.1105996085
    #   loss  = sqrt(MMD^2) = 0.3325651943
    # (with a sigma^2 bandwidth, exp(-d / (2 * 4)), MMD^2 would be (1 - e^-1/8) / 2 = 0.0587515.)
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    assert mmd_loss(x, y, sigmas=(2,), squared=True).item() == pytest.approx(0.1105996085, abs=1e-9)
    assert mmd_loss(x, y, sigmas=(2,)).item() == pytest.approx(0.3325651943, abs=1e-9)
    assert mmd_loss(y, x, sigmas=(2,)).item() == pytest.approx(0.3325651943, abs=1e-9)
    # kernel matrix entries: k(1, 2) = e^-1/4, k(0, 2) = e^-1
    k = gaussian_kernel_matrix(x, y, (2,))
    expected = torch.tensor([[1.0, math.exp(-1)], [math.exp(-0.25), math.exp(-0.25)]], dtype=torch.float64)
    torch.testing.assert_close(k, expected)


def _mmd_double_loop(x, y, sigmas):
    def k(a, b, v):
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2.0 * v))

    x, y = x.tolist(), y.tolist()
    total = 0.0
    for v in sigmas:
        kxx = sum(k(a, b, v) for a in x for b in x) / len(x) ** 2
        kyy = sum(k(a, b, v) for a in y for b in y) / len(y) ** 2
        kxy = sum(k(a, b, v) for a in x for b in y) / (len(x) * len(y))
        total += kxx + kyy - 2.0 * kxy
    return math.sqrt(total)


@pytest.mark.parametrize("sigmas", [DEFAULT_SIGMAS, (1.0,), (0.5, 3.0)])
def test_mmd_matches_double_loop(sigmas):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64) * 1.5 + 0.7  # M != N: both weightings matter
    assert mmd_loss(x, y, sigmas).item() == pytest.approx(_mmd_double_loop(x, y, sigmas), rel=1e-10)


def test_mmd_identical_sets_is_zero_with_finite_gradient():
    x = torch.randn(6, 4, requires_grad=True)
    loss = mmd_loss(x, x.detach().clone())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert mmd_loss(x, x + 0.5).item() > 0.1


def test_class_conditional_mmd_pairs_same_class_only():
    g = torch.Generator().manual_seed(1)
    fake = torch.randn(4, 3, generator=g)
    real = torch.randn(5, 3, generator=g)
    fake_labels = torch.tensor([0, 0, 1, 1])
    real_labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 only on the real side: ignored
    expected = (mmd_loss(fake[:2], real[:2]) + mmd_loss(fake[2:], real[2:4])) / 2
    torch.testing.assert_close(class_conditional_mmd(fake, real, fake_labels, real_labels), expected)
    # a class's term does not see other classes' real features
    only_zero = torch.tensor([0, 0, 0, 0])
    base = class_conditional_mmd(fake, real, only_zero, real_labels)
    moved = real.clone()
    moved[2:] += 10.0
    assert class_conditional_mmd(fake, moved, only_zero, real_labels).item() == base.item()
    torch.testing.assert_close(base, mmd_loss(fake, real[:2]))


def test_class_conditional_mmd_no_shared_class():
    fake = torch.randn(2, 3, requires_grad=True)
    out = class_conditional_mmd(fake, torch.randn(2, 3), torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert out.item() == 0.0
    out.backward()
    assert fake.grad is not None


# ---------------------------------------------------------------- relationship alignment


def test_relationship_alignment_hand_computed():
    # features f1 = (1, 0), f2 = (0, 1): cosines [[1, 0], [0, 1]] -> logits /0.1 = [[10, 0], [0, 10]]
    # class embeddings e1 = (1, 0), e2 = (1, sqrt 3): cosines [[1, .5], [.5, 1]] -> [[10, 5], [5, 10]]
    # target row (embeddings)  q = softmax(10, 5)  = (1 / (1 + e^-5),  e^-5 / (1 + e^-5))
    # predicted row (features) p = softmax(10, 0) = (1 / (1 + e^-10), e^-10 / (1 + e^-10))
    # KL(q || p) = q1 log(q1/p1) + q2 log(q2/p2) = A + 5 q2,  A = log(1 + e^-10) - log(1 + e^-5)
    #            = -0.0066699496 + 5 * 0.0066928509 = 0.0267943050 per row (both rows equal)
    # loss = (sum over the 2 rows) / (2 * 2 entries) = 0.0133971525
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    e = torch.tensor([[1.0, 0.0], [1.0, math.sqrt(3.0)]], dtype=torch.float64)
    assert relationship_alignment_loss(f, e, tau=0.1).item() == pytest.approx(0.0133971525, abs=1e-9)
    # the swapped direction KL(p || q) would give 0.0032215 here, tau = 1 would give 0.0139775.
    # cross pairs: one "seen" feature f1 against "unseen" {f1, f2}: a 1 x 2 matrix, same row, / 2 entries.
    loss = relationship_alignment_loss(f[:1], e[:1], 0.1, other_features=f, other_class_embeddings=e)
    assert loss.item() == pytest.approx(0.0267943050 / 2, abs=1e-9)


def test_relationship_alignment_matches_explicit_kl():
    g = torch.Generator().manual_seed(2)
    f, e = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    tau = 0.3
    fn, en = f / f.norm(dim=1, keepdim=True), e / e.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(3):
        q = torch.softmax(en[i] @ en.t() / tau, 0)
        p = torch.softmax(fn[i] @ fn.t() / tau, 0)
        total += float((q * (q / p).log()).sum())
    assert relationship_alignment_loss(f, e, tau=tau).item() == pytest.approx(total / 9, rel=1e-10)


def test_relationship_alignment_zero_when_features_are_scaled_embeddings():
    g = torch.Generator().manual_seed(8)
    e = torch.randn(4, 6, generator=g)
    f = e * torch.tensor([[0.5], [2.0], [3.0], [7.0]])
    assert relationship_alignment_loss(f, e).item() == pytest.approx(0.0, abs=1e-6)
    assert relationship_alignment_loss(e[[1, 0, 3, 2]], e).item() > 1e-3  # rows swapped: 0.0063
    assert relationship_alignment_loss(torch.randn(4, 6, generator=g), e).item() > 1e-2  # 0.111


def test_alignment_gradient_reaches_both_sides_unless_detached():
    f, e = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    relationship_alignment_loss(f, e).backward()
    assert f.grad.abs().sum() > 0 and e.grad.abs().sum() > 0
    e.grad = None
    f2 = torch.randn(3, 4, requires_grad=True)
    relationship_alignment_loss(f2, e, detach_target=True).backward()
    assert e.grad is None


def test_relation_net_shape_and_range():
    net = RelationNet(8, 5)
    s = net(torch.randn(3, 8), torch.randn(4, 5))
    assert s.shape == (3, 4) and bool(((s > 0) & (s < 1)).all())


# ---------------------------------------------------------------- disentangler


def test_disentangler_losses_match_explicit_formulas():
    torch.manual_seed(3)
    dis = FeatureDisentangler(feature_dim=6, dropout=0.1).eval()
    x = torch.randn(5, 6)
    related, unrelated = dis(x)
    assert related.shape == unrelated.shape == (5, 6)
    assert not torch.allclose(related, unrelated)
    noise = torch.randn(5, 6)
    out = dis.losses(x, parts=(related, unrelated), noise=noise)
    rec = dis.decoder(torch.cat([related, unrelated], 1))
    assert out["loss_reconstruction"].item() == pytest.approx(float((rec - x).abs().mean()), rel=1e-6)
    q = torch.softmax(noise / 0.1, 1)  # target: the N(0, 1) sample
    p = torch.softmax(unrelated / 0.1, 1)
    expected = float((q * (q.log() - p.log())).sum()) / unrelated.numel()
    assert out["loss_unrelated"].item() == pytest.approx(expected, rel=1e-5)
    # same values without precomputed parts (eval: no dropout)
    again = dis.losses(x, noise=noise)
    assert again["loss_unrelated"].item() == pytest.approx(expected, rel=1e-5)


def test_disentangler_structure_options():
    dis = FeatureDisentangler(feature_dim=4, latent_dim=3, decoder_output_activation=False)
    assert dis.related_encoder[0].out_features == 3 and dis.decoder[0].in_features == 6
    assert isinstance(dis.decoder[-1], torch.nn.Linear)
    # PADing's decoder ends in LeakyReLU + Dropout
    assert isinstance(FeatureDisentangler(4).decoder[-1], torch.nn.Dropout)


def test_softmax_kl_zero_on_equal_inputs():
    a = torch.randn(3, 5)
    assert softmax_kl(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- generators


def _grads_reach_all(module, out):
    out.pow(2).sum().backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_gmmn_shapes_noise_and_gradients():
    torch.manual_seed(4)
    gen = GMMNGenerator(embed_dim=5, feature_dim=7, noise_dim=3, hidden_dim=8)
    e = torch.randn(1, 5).expand(4, 5)  # same class four times
    out = gen(e)
    assert out.shape == (4, 7)
    assert not torch.allclose(out[0], out[1])  # different noise, different samples
    _grads_reach_all(gen, gen(e))
    z = gen.sample_noise(1000, e)
    assert z.shape == (1000, 3) and z.min() >= 0 and z.max() < 1  # ZS3Net: U[0, 1)
    assert gen.net[0].bias.detach().eq(0.01).all()


def test_gmmn_eval_determinism_and_options():
    torch.manual_seed(5)
    gen = GMMNGenerator(embed_dim=5, feature_dim=7, noise_dim=3, hidden_dim=8, dropout=0.5)
    e, z = torch.randn(6, 5), torch.rand(6, 3)
    assert not torch.equal(gen(e, z), gen(e, z))  # dropout in training
    gen.eval()
    assert torch.equal(gen(e, z), gen(e, z))
    assert gen(e, z).min() < 0  # no output activation by default (query embeddings can be negative)
    relu = GMMNGenerator(5, 7, noise_dim=3, output_activation="relu", noise_distribution="normal").eval()
    assert relu(e).min() >= 0
    assert len(GMMNGenerator(5, 7, noise_dim=3, hidden_dim=0).net) == 1
    with pytest.raises(ValueError):
        GMMNGenerator(5, 7, output_activation="tanh")


def _small_primitive(**kw):
    args = dict(embed_dim=6, feature_dim=16, num_primitives=10, num_layers=2, nheads=4, dim_feedforward=32)
    args.update(kw)
    return PrimitiveGenerator(**args)


def test_primitive_generator_shapes_noise_and_gradients():
    torch.manual_seed(6)
    gen = _small_primitive()
    e = torch.randn(1, 6).expand(3, 6)
    out = gen(e)
    assert out.shape == (3, 16)
    # output is the final LayerNorm's (weight 1, bias 0 at init): zero mean, unit variance rows
    torch.testing.assert_close(out.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    assert not torch.allclose(out[0], out[1])  # Gaussian noise: same class, different samples
    gen.eval()
    out = gen(e)
    assert not torch.allclose(out[0], out[1])  # PADing keeps the noise in eval
    gen.train()
    _grads_reach_all(gen, gen(torch.randn(4, 6)))


def test_primitive_generator_eval_determinism_and_independence():
    torch.manual_seed(7)
    gen = _small_primitive(noise_in_eval=False).eval()
    e = torch.randn(4, 6)
    a = gen(e)
    torch.testing.assert_close(a, gen(e), rtol=0, atol=0)
    torch.testing.assert_close(gen(e[:1]), a[:1])  # samples do not attend to each other
    zero = torch.zeros(2, 4, 16)
    torch.testing.assert_close(gen(e, noise=zero), a)  # explicit zero noise == no noise
    noisy = _small_primitive().eval()
    noisy.load_state_dict(gen.state_dict())
    z = torch.randn(2, 4, 16)
    torch.testing.assert_close(noisy(e, noise=z), noisy(e, noise=z), rtol=0, atol=0)
    assert not torch.allclose(noisy(e, noise=z), a)
    with pytest.raises(ValueError):
        gen(e, noise=torch.zeros(3, 4, 16))
    assert _small_primitive(noise_std=0.0).eval()(e).shape == (4, 16)


# ---------------------------------------------------------------- registry


def test_registry_builds_both_and_rejects_unknown():
    small = dict(embed_dim=6, feature_dim=16, num_primitives=4, num_layers=1, nheads=2, dim_feedforward=8)
    assert isinstance(build_generator("primitive", **small), PrimitiveGenerator)
    assert isinstance(build_generator("gmmn", embed_dim=6, feature_dim=16), GMMNGenerator)
    with pytest.raises(ValueError, match="gmmn, primitive"):
        build_generator("gan", embed_dim=6)
