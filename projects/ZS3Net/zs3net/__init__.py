"""ZS3Net on zsi_d2 (projects/ZS3Net): importing registers the ZS3Net meta-architecture."""
from .config import add_zs3net_config  # noqa: F401
from .meta_arch import ZS3Net  # noqa: F401
from .pseudo_labels import compute_pseudo_label_bank, select_pseudo_labels  # noqa: F401
