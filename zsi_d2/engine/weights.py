"""MODEL.WEIGHTS must be a local file: zsi_d2 never downloads anything at run time."""
import os

from ..errors import InputFileNotFoundError, InputValueError

__all__ = ["check_weights"]


def check_weights(path: str, eval_only: bool = False):
    """Fail early and clearly, before a model is built, on a URL or a missing checkpoint (and, for
    evaluation, on no checkpoint at all: a randomly initialised model must never be scored)."""
    if not path:
        if eval_only:
            raise InputValueError(
                "--eval-only needs MODEL.WEIGHTS: without a checkpoint the model is randomly initialised and its "
                "numbers mean nothing. Add MODEL.WEIGHTS path/to/model_final.pth."
            )
        return
    if "://" in path:
        raise InputValueError(
            f"MODEL.WEIGHTS='{path}' is a URL, and zsi_d2 never downloads at run time. "
            "Fetch the checkpoint yourself and set MODEL.WEIGHTS to its local path."
        )
    if not os.path.isfile(path):
        raise InputFileNotFoundError(
            f"MODEL.WEIGHTS='{path}' does not exist. Give a local checkpoint (.pth or detectron2 .pkl), "
            "or MODEL.WEIGHTS '' to train from the backbone's own initialisation."
        )
