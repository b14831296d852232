"""Real features of a frozen model, kept for a generative method's second stage, and the order they
are drawn in.

Why: in the second stage of every generative zero-shot method (ZS3Net, CaGNet, SIGN, PADing) the
feature extractor is frozen, so its features of a training image never change. They are computed
once (`FeatureBank`) and drawn in epochs (`EpochSampler`, without replacement, as a data loader
would), so a stage-2 iteration costs only the generator and the classifier.

What a feature is depends on the method, not on this module: PADing stores the (Q, C) query
embeddings of each image with the class of the ground-truth segment each query was matched to; a
pixel-level method stores (P, C) pixel features with each pixel's class. Either way a bank holds
`features` (N, P, C), `labels` (N, P) long: an index into `names` (seen classes only), or
`NO_OBJECT` (a query matched to nothing; background), or `IGNORE` (a pixel without a label).
"""
from typing import Sequence

import torch

from detectron2.utils import comm

from ..class_set import ClassSet

__all__ = ["FeatureBank", "EpochSampler", "NO_OBJECT", "IGNORE"]

NO_OBJECT = -1
IGNORE = -2


class FeatureBank:
    """features (N, P, C) float and labels (N, P) long of N training images; `names` are the seen
    classes the labels index."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, names: Sequence[str]):
        if features.shape[:2] != labels.shape:
            raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
        self.features, self.labels, self.names = features, labels, tuple(names)

    def __len__(self):
        return self.features.shape[0]

    def relabel(self, class_set: ClassSet) -> torch.Tensor:
        """labels as local indices of `class_set`; NO_OBJECT -> len(class_set.names) (the classifier's
        last column), IGNORE stays IGNORE. A bank class outside the class set is an error."""
        missing = [n for n in self.names if n not in class_set.names]
        if missing:
            raise ValueError(f"the feature bank's classes {missing} are not in the class set {list(class_set.names)}")
        lookup = torch.tensor([class_set.names.index(n) for n in self.names] + [IGNORE, len(class_set.names)])
        return lookup[self.labels]  # IGNORE (-2) and NO_OBJECT (-1) pick the last two entries

    @classmethod
    def concat(cls, banks: Sequence["FeatureBank"], names: Sequence[str]) -> "FeatureBank":
        """The images of `banks`, one after the other, their labels re-indexed into `names` (a superset
        of every bank's names), rows padded with IGNORE to the longest."""
        names = tuple(names)
        longest = max(b.features.shape[1] for b in banks)
        features, labels = [], []
        for bank in banks:
            missing = [n for n in bank.names if n not in names]
            if missing:
                raise ValueError(f"feature bank classes {missing} are not in {list(names)}")
            lookup = torch.tensor([names.index(n) for n in bank.names] + [IGNORE, NO_OBJECT])
            pad = longest - bank.features.shape[1]
            features.append(torch.nn.functional.pad(bank.features, (0, 0, 0, pad)))
            labels.append(torch.nn.functional.pad(lookup[bank.labels], (0, pad), value=IGNORE))
        return cls(torch.cat(features), torch.cat(labels), names)

    def state(self) -> dict:
        return {"features": self.features, "labels": self.labels, "names": list(self.names)}

    @classmethod
    def from_state(cls, state: dict) -> "FeatureBank":
        return cls(state["features"], state["labels"], state["names"])


class EpochSampler:
    """Image indices of a bank of `size` images, `batch_size` per iteration (all processes
    together), epoch after epoch, each epoch a fresh permutation (seed + epoch): every image is
    drawn once per epoch. Its position is checkpointed, so a resumed run draws what the
    uninterrupted one would have. Process r of W takes every W-th index of each batch, so the W
    processes together see the batch one process would."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.position = 0  # indices drawn so far, by all processes together

    def _permutation(self, size: int, epoch: int) -> torch.Tensor:
        return torch.randperm(size, generator=torch.Generator().manual_seed(self.seed + epoch))

    def next_batch(self, size: int, batch_size: int) -> torch.Tensor:
        """This process's indices of the next batch (a batch may span two epochs)."""
        if size <= 0:
            raise ValueError("EpochSampler: the feature bank is empty")
        batch, count = [], 0
        while count < batch_size:
            epoch, offset = divmod(self.position, size)
            take = min(batch_size - count, size - offset)
            batch.append(self._permutation(size, epoch)[offset: offset + take])
            self.position += take
            count += take
        batch = torch.cat(batch)
        return batch[comm.get_rank():: comm.get_world_size()]

    def state_dict(self):
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state):
        self.seed, self.position = int(state["seed"]), int(state["position"])
