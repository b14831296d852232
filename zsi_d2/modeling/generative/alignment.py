"""PADing's structure losses: relationship alignment (KL of similarity rows) and the relation net.

Why: the generator learns unseen classes only through their embeddings, so the *relations* among
fake features (which classes look alike) are made to follow the relations among the class
embeddings, for seen-seen, unseen-unseen and seen-unseen pairs.

Reference (``PADing/PADing_model.py``, ``kl_loss`` and ``cal_similarity``)::

    kl_loss(pred, target) = F.kl_div(log_softmax(pred / T), log_softmax(target / T),
                                     reduction="sum", log_target=True) / pred.numel(),  T = 0.1

i.e. ``sum_i KL(softmax(target_i / T) || softmax(pred_i / T)) / (rows * cols)``: the *class-embedding*
distribution is the target (first argument of the KL), the feature one the prediction; rows are
softmaxed over the last dimension; the sum is divided by the number of matrix entries (not by the
number of rows as ``batchmean`` would). Gradients reach both sides: PADing does not detach the
target, whose class embeddings are the trainable ``fc_projection`` outputs.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["softmax_kl", "cosine_similarity_matrix", "relationship_alignment_loss", "RelationNet"]


def softmax_kl(prediction: torch.Tensor, target: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """PADing's ``kl_loss``: sum over rows of KL(softmax(target/tau) || softmax(prediction/tau)) / numel.

    Also PADing's "unrelated -> N(0, 1)" loss, with ``prediction`` the unrelated code and ``target``
    a fresh N(0, 1) sample of the same shape (rows softmaxed over the feature dimension).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"softmax_kl: shapes differ, {tuple(prediction.shape)} vs {tuple(target.shape)}")
    log_p = F.log_softmax(prediction / tau, dim=-1)
    log_q = F.log_softmax(target / tau, dim=-1)
    return F.kl_div(log_p, log_q, reduction="sum", log_target=True) / prediction.numel()


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, D), (m, D) -> (n, m) cosine similarities (PADing's ``cal_similarity(method="cosine")``)."""
    return F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).t()


def relationship_alignment_loss(
    features: torch.Tensor,
    class_embeddings: torch.Tensor,
    tau: float = 0.1,
    other_features: Optional[torch.Tensor] = None,
    other_class_embeddings: Optional[torch.Tensor] = None,
    detach_target: bool = False,
) -> torch.Tensor:
    """KL(row-softmax(cos(E, E')/tau) || row-softmax(cos(F, F')/tau)), summed, / (n * n').

    Args:
        features: (n, D) features, row i of class ``class_embeddings[i]`` (n, E).
        other_features, other_class_embeddings: the second set (n', D), (n', E) for cross pairs;
            default: the first set (within-set pairs, diagonal included as in PADing).
        detach_target: stop gradients into the class-embedding side (PADing: False).

    PADing's use: ``(L(s, s) + L(u, u) + L(s, u)) / 3`` where s = semantic-related parts of the fake
    seen features (one per matched real query) with their projected class embeddings, u = those of
    one fake per unseen class; all features are generator outputs (no real feature enters).
    """
    if (other_features is None) != (other_class_embeddings is None):
        raise ValueError("give both other_features and other_class_embeddings, or neither")
    if features.shape[0] != class_embeddings.shape[0]:
        raise ValueError("relationship_alignment_loss: one class embedding per feature row is needed")
    if other_features is None:
        other_features, other_class_embeddings = features, class_embeddings
    elif other_features.shape[0] != other_class_embeddings.shape[0]:
        raise ValueError("relationship_alignment_loss: one class embedding per other feature row is needed")
    pred = cosine_similarity_matrix(features, other_features)
    target = cosine_similarity_matrix(class_embeddings, other_class_embeddings)
    if detach_target:
        target = target.detach()
    return softmax_kl(pred, target, tau)


class RelationNet(nn.Module):
    """PADing's relation module: score every (feature, class embedding) pair in (0, 1).

    ``fc1: Linear(D + E, D) -> ReLU -> fc2: Linear(D, 1) -> Sigmoid`` on ``cat(feature, class)``.
    PADing feeds these sigmoid scores, shape (n, K), to ``F.cross_entropy`` as logits against the
    class index (weight ``0.2 * WEIGHT_2``; seen fakes scored against all classes, unseen fakes
    against the unseen classes only).
    """

    def __init__(self, feature_dim: int, embed_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + embed_dim, feature_dim)
        self.fc2 = nn.Linear(feature_dim, 1)

    def forward(self, features: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(n, D) features, (K, E) class embeddings -> (n, K) relation scores."""
        n, k = features.shape[0], class_embeddings.shape[0]
        pairs = torch.cat(
            [features.unsqueeze(1).expand(n, k, -1), class_embeddings.unsqueeze(0).expand(n, k, -1)], dim=2
        )
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pairs)))).squeeze(2)
