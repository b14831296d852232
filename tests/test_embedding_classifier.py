"""EmbeddingClassifier: cosine logits against class embeddings, background last, hand-checked."""
import math

import pytest
import torch

from zsi_d2.modeling.class_embeddings import ClassEmbeddings
from zsi_d2.modeling.embedding_classifier import EmbeddingClassifier


def _classifier(**kw):
    emb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # row 1 gets normalised
    classes = ClassEmbeddings(("a", "b", "c"), emb, background=torch.tensor([1.0, 1.0, 0.0]))
    clf = EmbeddingClassifier(3, classes, logit_scale=10.0, **kw)
    with torch.no_grad():
        clf.project.weight.copy_(torch.eye(3))
        clf.project.bias.zero_()
    return clf


def test_logits_match_hand_computed_cosines():
    clf = _classifier()
    x = torch.tensor([[3.0, 4.0, 0.0]])  # unit: (0.6, 0.8, 0)
    logits = clf(x)
    bg = (0.6 + 0.8) / math.sqrt(2)
    expected = 10.0 * torch.tensor([[0.6, 0.8, 0.0, bg]])
    torch.testing.assert_close(logits, expected)


def test_active_subset_in_requested_order():
    clf = _classifier()
    clf.set_class_names(("c", "a"))
    logits = clf(torch.tensor([[0.0, 0.0, 5.0]]))
    assert logits.shape == (1, 3)
    torch.testing.assert_close(logits[0, :2], torch.tensor([10.0, 0.0]))
    assert clf.active_names == ("c", "a")


def test_unknown_class_is_a_clear_error():
    with pytest.raises(KeyError, match="No embedding for classes"):
        _classifier().set_class_names(("a", "zebra"))


def test_gradients_reach_projection_and_background_not_embeddings():
    clf = _classifier()
    clf(torch.randn(4, 3)).logsumexp(1).sum().backward()
    assert clf.project.weight.grad.abs().sum() > 0
    assert clf.classes.background.grad.abs().sum() > 0
    assert not clf.classes.embeddings.requires_grad
    assert clf.log_logit_scale.grad is None  # fixed unless learn_logit_scale


def test_embeddings_are_not_saved_but_background_is():
    state = _classifier().state_dict()
    assert "classes.embeddings" not in state and "classes.active" not in state
    assert "classes.background" in state


class _BackgroundSource(torch.nn.Module):
    def __init__(self, vector):
        super().__init__()
        self.vector = torch.nn.Parameter(vector)

    def background_vector(self):
        return self.vector


def test_synced_background_overrides_learned_one_and_is_read_at_every_use():
    clf = _classifier()
    source = _BackgroundSource(torch.tensor([0.0, 0.0, 3.0]))
    clf.classes.sync_background_from(source.background_vector)
    x = torch.tensor([[0.0, 0.0, 1.0]])
    assert clf(x)[0, -1].item() == pytest.approx(10.0)
    with torch.no_grad():
        source.vector.copy_(torch.tensor([3.0, 0.0, 0.0]))
    x = torch.tensor([[1.0, 0.0, 0.0]])
    assert clf(x)[0, -1].item() == pytest.approx(10.0)
    clf(torch.tensor([[0.0, 1.0, 0.0]]))[0, -1].backward()
    assert source.vector.grad.abs().sum() > 0 and clf.classes.background.grad is None
    clf.classes.sync_background_from(None)
    assert clf(x)[0, -1].item() == pytest.approx(10.0 / math.sqrt(2))  # the learned (1, 1, 0) again


def test_background_source_that_a_deepcopy_cannot_rebind_is_refused():
    with pytest.raises(TypeError, match="bound method of an nn.Module"):
        _classifier().classes.sync_background_from(lambda: torch.zeros(3))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(2, D\)"):
        ClassEmbeddings(("a", "b"), torch.randn(3, 4))
