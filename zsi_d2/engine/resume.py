"""What a killed training run needs to resume exactly where it stopped.

Why: detectron2 0.6's `--resume` restores the weights, the optimizer, the LR schedule and the
iteration, but its training sampler starts its index stream from the beginning again and the
random generators start from `SEED` again, so a resumed run sees other images in another order
and draws other RPN/RoI samples than the run it continues. Here the sampler seeks to the first
image not yet trained on, and the Python, NumPy and torch generators are saved in every
checkpoint and restored. On one process with DATALOADER.NUM_WORKERS 0 (the CPU configs) a resumed
run ends with the same weights as an uninterrupted one (tests/test_train_net.py). With loader
workers the data order is restored but the workers' augmentation draws are not; with several
processes each rank continues from rank 0's saved generators.
"""
import logging
import random

import numpy as np
import torch

from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

__all__ = ["ResumableTrainingSampler", "RNGState", "build_resumable_train_loader", "restart_loader"]

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's TrainingSampler (same infinite shuffled stream) that can start `start` indices
    into its stream; a checkpointable, so a resumed run also keeps the shuffle seed."""

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0

    def seek(self, num_samples: int):
        """Skip the first `num_samples` indices of the stream (all ranks together)."""
        self.start = int(num_samples)

    def __iter__(self):
        # Same sharding as TrainingSampler: rank r takes every world_size-th index from `start` on.
        stream = self._infinite_indices()
        for _ in range(self.start):
            next(stream)
        for i, index in enumerate(stream):
            if i % self._world_size == self._rank:
                yield index

    def state_dict(self):
        return {"seed": self._seed}

    def load_state_dict(self, state):
        self._seed = int(state["seed"])


def build_resumable_train_loader(cfg, mapper):
    """detectron2's training loader, built exactly as `build_detection_train_loader(cfg, mapper)`
    does, but drawing from a ResumableTrainingSampler (same seed, same stream), which is kept as
    the loader's `resumable_sampler` (None for other DATALOADER.SAMPLER_TRAIN choices)."""
    from detectron2.data import build_detection_train_loader
    from detectron2.data.build import _train_loader_from_config

    kwargs = _train_loader_from_config(cfg, mapper)
    sampler = None
    if type(kwargs["sampler"]) is TrainingSampler:
        sampler = ResumableTrainingSampler(len(kwargs["dataset"]), seed=kwargs["sampler"]._seed)
        kwargs["sampler"] = sampler
    else:
        logger.warning(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: a resumed run restarts this sampler's stream, "
            "so it sees other images than the run it continues (TrainingSampler resumes exactly)."
        )
    loader = build_detection_train_loader(**kwargs)
    loader.resumable_sampler = sampler
    return loader


def restart_loader(loader, num_samples: int):
    """A fresh iterator over `loader` that starts `num_samples` images into the sampler's stream.

    A DataLoader draws its workers' base seed from the global torch generator when an iterator
    starts (lazily, at its first batch). The run being continued made that draw at its first
    batch, before the saved generator states; a second one here would shift every later random
    draw of the model, so the restarted iterator draws from a private generator instead.
    """
    sampler = getattr(loader, "resumable_sampler", None)
    if sampler is None:
        return iter(loader)
    sampler.seek(num_samples)
    inner = loader if isinstance(loader, torch.utils.data.DataLoader) else getattr(loader, "dataset", None)
    if isinstance(inner, torch.utils.data.DataLoader):
        inner.generator = torch.Generator().manual_seed(sampler._seed + num_samples)
    return iter(loader)


class RNGState:
    """Python, NumPy and torch (CPU and CUDA) generator states as a checkpointable."""

    def state_dict(self):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        if comm.get_rank() != 0:
            return  # only rank 0's generators were saved; other ranks keep their own seeding
        self.restore(state)
        logger.info("Restored the random generators of the checkpoint")

    @staticmethod
    def restore(state):
        """Set the Python, NumPy and torch generators to a `state_dict()` (in every process)."""
        random.setstate(_as_python_state(state["python"]))
        n = state["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state):
    """random.setstate needs tuples; a checkpoint may hand lists back."""
    version, internal, gauss = state
    return version, tuple(internal), gauss
