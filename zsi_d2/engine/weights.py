"""MODEL.WEIGHTS must be a local file: zsi_d2 never downloads anything at run time."""
import os

__all__ = ["check_weights"]


def check_weights(path: str):
    """Fail early and clearly, before a model is built, on a URL or a missing checkpoint."""
    if not path:
        return
    if "://" in path:
        raise ValueError(
            f"MODEL.WEIGHTS='{path}' is a URL, and zsi_d2 never downloads at run time. "
            "Fetch the checkpoint yourself and set MODEL.WEIGHTS to its local path."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MODEL.WEIGHTS='{path}' does not exist. Give a local checkpoint (.pth or detectron2 .pkl), "
            "or MODEL.WEIGHTS '' to train from the backbone's own initialisation."
        )
