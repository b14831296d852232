"""ZSI (Zheng et al., CVPR 2021): zero-shot Faster/Mask R-CNN with BA-RPN, Sync-bg, a zero-shot
detector and a Semantic Mask Head. Every component is switchable in the config (see config.py)."""
from .ba_rpn import BackgroundAwareRPNHead  # noqa: F401
from .config import add_zsi_config  # noqa: F401
from .meta_arch import ZSIRCNN  # noqa: F401
from .roi_heads import ZSIROIHeads  # noqa: F401
from .semantic_mask_head import SemanticMaskHead  # noqa: F401
from .zero_shot_detector import ZeroShotDetectorPredictor  # noqa: F401
