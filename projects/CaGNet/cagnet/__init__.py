"""CaGNet on zsi_d2 (projects/CaGNet): importing registers the CaGNet meta-architecture."""
from .config import add_cagnet_config  # noqa: F401
from .meta_arch import CaGNet  # noqa: F401
from .pseudo_labels import top_p_pseudo_labels  # noqa: F401
from .trainer import CaGNetTrainer  # noqa: F401
