"""Fixed class-name embeddings with a switchable active set and a background vector.

Why: every zero-shot classifier (box classifier, Semantic Mask Head, mask classifiers) needs the
same three things: the embeddings of every class the model may be asked about, the subset it
scores now (seen in training, seen + unseen or unseen at test), and a background vector that no
class name describes. Written once here and composed by each head.
"""
import inspect
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputKeyError, InputValueError
from .class_set import ZeroShotModule, class_universe, default_class_set

__all__ = ["ClassEmbeddings", "build_class_embeddings_module"]


class ClassEmbeddings(nn.Module, ZeroShotModule):
    """`weights()` -> (K + 1, D) unit vectors: the K active classes, then background."""

    def __init__(
        self,
        class_names: Sequence[str],
        embeddings: torch.Tensor,
        background: Optional[torch.Tensor] = None,
        learn_background: bool = True,
    ):
        super().__init__()
        if embeddings.dim() != 2 or embeddings.shape[0] != len(class_names):
            raise ValueError(f"embeddings must be ({len(class_names)}, D), got {tuple(embeddings.shape)}")
        dim = embeddings.shape[1]
        self.class_names: Tuple[str, ...] = tuple(class_names)
        self.built_names: Tuple[str, ...] = self.class_names  # the names it was built for (they find the split)
        # Not saved in checkpoints: embeddings come from the config, so a trained model can be
        # evaluated on any class names the embedding source can encode.
        self.register_buffer("embeddings", F.normalize(embeddings.float(), dim=1), persistent=False)
        if background is None:
            background = torch.randn(dim) * 0.01
        if background.shape != (dim,):
            raise ValueError(f"background must be ({dim},), got {tuple(background.shape)}")
        self.background = nn.Parameter(background.detach().clone().float(), requires_grad=learn_background)
        self.register_buffer("active", torch.arange(len(self.class_names)), persistent=False)
        # Sync-bg: a bound method of another module of the same model that returns the background
        # to use instead of self.background; None means "use self.background". Wiring, not state:
        # read at every use, so no tensor of a forward pass is kept (deepcopy, pickling, EMA work).
        self._background_source: Optional[Callable[[], torch.Tensor]] = None

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def num_active(self) -> int:
        return int(self.active.numel())

    @property
    def active_names(self) -> Tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.active.tolist())

    def set_class_names(self, names):
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise InputKeyError(
                f"No embedding for classes {missing}: this model was built for {list(self.class_names)}. "
                "Add the dataset to DATASETS.TRAIN/TEST of the config so its classes are embedded."
            )
        index = [self.class_names.index(n) for n in names]
        self.active = torch.tensor(index, dtype=torch.long, device=self.embeddings.device)

    def add_class_names(self, names, cfg):
        """Embed the names of `names` this bank lacks with the source `cfg` configures, in this bank's
        space (the names it was built for find the split), so that they can be scored (zsi_d2.set_vocabulary)."""
        from ..embeddings import build_class_embeddings

        missing = [n for n in dict.fromkeys(names) if n not in self.class_names]
        if not missing:
            return
        new = build_class_embeddings(cfg, missing, split_for=self.built_names)
        if new.shape[1] != self.dim:
            raise InputValueError(
                f"The config embeds class names in {new.shape[1]} dimensions, but this model's class embeddings "
                f"have {self.dim}: give the config the model was built with (MODEL.ZERO_SHOT.EMBEDDING)")
        new = F.normalize(new.float(), dim=1).to(self.embeddings.device)
        self.embeddings = torch.cat([self.embeddings, new], dim=0)
        self.class_names = self.class_names + tuple(missing)

    def sync_background_from(self, source: Optional[Callable[[], torch.Tensor]]):
        """Use `source()` (e.g. BA-RPN's learned background) as the background from now on; None undoes it.

        A bound method of a module is required so that copy.deepcopy / pickling of the model
        rebind it to the copy's module (a lambda or a plain function would keep the original's).
        """
        if source is not None and not (inspect.ismethod(source) and isinstance(source.__self__, nn.Module)):
            raise TypeError(f"The background source must be a bound method of an nn.Module, got {source!r}")
        self._background_source = source

    def current_background(self) -> torch.Tensor:
        return self.background if self._background_source is None else self._background_source()

    def weights(self) -> torch.Tensor:
        return self.weights_of(self.active)

    def weights_of(self, index: torch.Tensor) -> torch.Tensor:
        """(len(index) + 1, D) unit vectors of the classes at `index` (into class_names), then background."""
        bg = F.normalize(self.current_background(), dim=0)
        return torch.cat([self.embeddings[index], bg[None]], dim=0)

    def seen_basis(self, seen_names) -> torch.Tensor:
        """V_seen: the (S + 1, D) unit vectors of the seen classes, then background, through which the
        ZSI reference scores (box head) and maps (mask head) the classes it was not trained on."""
        return self.weights_of(self.index_of(seen_names))

    def index_of(self, names) -> torch.Tensor:
        """Positions of `names` in class_names (an error names any class without an embedding)."""
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise KeyError(f"No embedding for classes {missing}: this model was built for {list(self.class_names)}.")
        return torch.tensor([self.class_names.index(n) for n in names], dtype=torch.long, device=self.embeddings.device)


def build_class_embeddings_module(cfg, kind: str = "thing", learn_background: bool = True) -> ClassEmbeddings:
    """Embeddings of every class the configured datasets name, seen and unseen, starting with the
    class set of the first training dataset active."""
    from ..embeddings import build_background_embedding, build_class_embeddings

    names = class_universe(cfg, kind)
    bank = ClassEmbeddings(
        names,
        build_class_embeddings(cfg, names),
        background=build_background_embedding(cfg),
        learn_background=learn_background,
    )
    bank.set_class_names(default_class_set(cfg, kind).names)
    return bank
