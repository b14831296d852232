"""The shared second-stage machinery (zsi_d2.modeling.generative.criterion / feature_bank) against
hand-computed losses with a stub generator and a stub classifier: the generator's class loss over
every column, the classifier's CE with fake unseen rows under their own labels and the unseen /
no-object weights, the MMD gradient reaching the generator, and epochs drawn without replacement."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zsi_d2.modeling.class_set import ClassSet
from zsi_d2.modeling.generative import IGNORE, NO_OBJECT, EpochSampler, FeatureBank, GenerativeCriterion, mmd_loss

torch.set_num_threads(1)

K, D = 4, 3  # classes 0, 1 seen; 2, 3 unseen
UNSEEN = torch.tensor([2, 3])


class StubGenerator(nn.Module):
    """Deterministic: feature = W e (no noise), so every loss can be computed by hand."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(D * K, dtype=torch.float32).view(D, K) / 10)

    def forward(self, embeddings):
        return embeddings @ self.weight.t()


def _classifier():
    torch.manual_seed(0)
    return nn.Linear(D, K + 1)  # K classes + no object


def _criterion(**kw):
    args = dict(loss_weights={"mmd": 1.0, "generator_class": 0.5}, mmd_sigmas=(2.0, 5.0), num_choose=len(UNSEEN),
                unseen_class_weight=5.0, no_object_weight=0.1)
    args.update(kw)
    return GenerativeCriterion(StubGenerator(), **args)


def test_generator_class_loss_is_ce_over_every_column():
    criterion, classifier = _criterion(), _classifier()
    embeddings = torch.eye(K)
    real, labels = torch.randn(3, D), torch.tensor([0, 1, 1])
    losses = criterion.generator_losses(real, labels, embeddings, classifier, UNSEEN)
    fake = embeddings[labels] @ criterion.generator.weight.t()
    logits = classifier(fake)  # (3, K + 1): seen, unseen and no-object columns
    expected = 0.5 * -(logits.log_softmax(1)[torch.arange(3), labels]).mean()
    assert losses["loss_generator_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    seen_only = 0.5 * F.cross_entropy(logits[:, :2], labels)  # the softmax restricted to the seen columns
    assert abs(losses["loss_generator_ce"].item() - seen_only.item()) > 1e-3
    assert losses["loss_mmd"].item() == pytest.approx(mmd_loss(fake, real, (2.0, 5.0)).item(), rel=1e-6)


def test_mmd_gradient_reaches_the_generator():
    criterion = _criterion(loss_weights={"mmd": 1.0})
    losses = criterion.generator_losses(torch.randn(4, D), torch.tensor([0, 1, 0, 1]), torch.eye(K), _classifier(),
                                        UNSEEN)
    assert set(losses) == {"loss_mmd"}
    losses["loss_mmd"].backward()
    assert criterion.generator.weight.grad is not None and criterion.generator.weight.grad.abs().sum() > 0


def test_classifier_loss_by_hand_fake_unseen_labels_and_weights():
    criterion, classifier = _criterion(), _classifier()
    embeddings = torch.eye(K)
    real = torch.randn(3, D)
    labels = torch.tensor([0, 1, K])  # two matched seen queries and one no-object query
    loss = criterion.classifier_losses(real, labels, embeddings, classifier, UNSEEN)["loss_classifier_ce"]
    # num_choose = every unseen class: the fakes are W e_2 and W e_3, labelled 2 and 3 (in random order,
    # which a weighted mean does not see).
    fake = embeddings[UNSEEN] @ criterion.generator.weight.t()
    features, targets = torch.cat([real, fake]), torch.cat([labels, UNSEEN])
    logp = classifier(features).log_softmax(1)
    weight = torch.tensor([1.0, 1.0, 5.0, 5.0, 0.1])[targets]
    expected = -(weight * logp[torch.arange(len(targets)), targets]).sum() / weight.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # A shifted fake label, or a missing unseen / no-object weight, gives another value.
    for wrong_targets, wrong_weight in [(torch.cat([labels, UNSEEN.flip(0)]), weight),
                                        (targets, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1])[targets]),
                                        (targets, torch.tensor([1.0, 1.0, 5.0, 5.0, 1.0])[targets])]:
        other = -(wrong_weight * logp[torch.arange(len(targets)), wrong_targets]).sum() / wrong_weight.sum()
        assert abs(other.item() - expected.item()) > 1e-4


def test_classifier_step_does_not_train_the_generator():
    criterion, classifier = _criterion(), _classifier()
    loss = criterion.classifier_losses(torch.randn(2, D), torch.tensor([0, K]), torch.eye(K), classifier, UNSEEN)
    loss["loss_classifier_ce"].backward()
    assert criterion.generator.weight.grad is None and classifier.weight.grad.abs().sum() > 0


def test_empty_batches_give_no_loss():
    criterion = _criterion()
    empty, none = torch.zeros(0, D), torch.zeros(0, dtype=torch.long)
    assert criterion.generator_losses(empty, none, torch.eye(K), _classifier(), UNSEEN) == {}
    no_fakes = _criterion(num_choose=0)
    assert no_fakes.classifier_losses(empty, none, torch.eye(K), _classifier(), UNSEEN) == {}


def test_feature_bank_relabels_into_a_class_set():
    bank = FeatureBank(torch.zeros(1, 4, D), torch.tensor([[1, 0, NO_OBJECT, IGNORE]]), ["b", "a"])
    class_set = ClassSet(("a", "b", "u"), ("a", "b", "u"), unseen=("u",))
    assert bank.relabel(class_set).tolist() == [[0, 1, 3, IGNORE]]
    with pytest.raises(ValueError, match="not in the class set"):
        bank.relabel(ClassSet(("a", "u"), ("a", "b", "u"), unseen=("u",)))


def test_epoch_sampler_draws_every_image_once_per_epoch_and_resumes():
    sampler = EpochSampler(seed=3)
    batches = [sampler.next_batch(10, 4) for _ in range(5)]  # 20 indices = 2 epochs
    drawn = torch.cat(batches)
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))
    assert drawn[:10].tolist() != drawn[10:].tolist()  # a fresh permutation per epoch
    resumed = EpochSampler()
    resumed.load_state_dict(EpochSampler(seed=3).state_dict())
    for _ in range(3):
        resumed.next_batch(10, 4)
    state = resumed.state_dict()
    again = EpochSampler()
    again.load_state_dict(state)
    assert torch.equal(again.next_batch(10, 4), batches[3]) and torch.equal(again.next_batch(10, 4), batches[4])
