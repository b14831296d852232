"""A dataset name that is not registered: say so, with the close names, before anything else."""
import difflib

from detectron2.data import DatasetCatalog

from ..errors import InputKeyError

__all__ = ["require_registered"]


def require_registered(name: str, what: str = "Dataset"):
    """Raise one clear line for a name DatasetCatalog does not know (e.g. a typo in DATASETS.TEST)."""
    registered = list(DatasetCatalog.keys())
    if name in registered:
        return
    close = difflib.get_close_matches(name, registered, n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise InputKeyError(
        f"{what} '{name}' is not registered.{hint} Built-in zero-shot datasets are zs_shapes_* and the COCO "
        "splits (datasets/README.md); register your own in a module named in DATASETS.REGISTER_MODULES."
    )
