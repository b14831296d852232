"""A dataset name that is not registered: say so, with the close names, before anything else.

Why: MetadataCatalog.get creates an empty entry for any name, so a typo would otherwise surface
later as a missing metadata field instead of "not registered".
"""
import difflib

from detectron2.data import DatasetCatalog

from ..errors import InputKeyError

__all__ = ["require_registered", "REGISTER_FIX"]

REGISTER_FIX = (
    "the built-in zero-shot datasets are zs_shapes_*, the COCO splits (COCO-Stuff included), voc_zss_15_5_*, "
    "pascal_context_zss_29_4_* and ade20k_full_zss_572_275_* "
    "(datasets/README.md); register yours "
    "in a module (detectron2's register_coco_instances / register_coco_panoptic / DatasetCatalog.register, then "
    "zsi_d2.data.make_zero_shot) and name it: DATASETS.REGISTER_MODULES \"['my_datasets.py']\" for train_net.py, "
    "--register my_datasets.py for the audit and evaluation CLIs"
)


def require_registered(name: str, what: str = "Dataset", fix: str = REGISTER_FIX, error=InputKeyError):
    """Raise one clear line (an `error`) for a name DatasetCatalog does not know."""
    registered = list(DatasetCatalog.keys())
    if name in registered:
        return
    close = difflib.get_close_matches(name, registered, n=5, cutoff=0.6)
    close = f"Close names: {', '.join(close)}." if close else f"No close name among the {len(registered)} registered."
    raise error(f"{what} '{name}' is not registered. {close} Fix: {fix}.")
