"""PADing (He et al., CVPR 2023): primitive generation with collaborative relationship alignment and
feature disentanglement. Stage 1 is the mask-classification core (ZeroShotMaskFormer) trained on
seen classes; stage 2 (meta-architecture "PADing", trained by zsi_d2.engine.GenerativeTrainer)
freezes it and re-trains its classifier on real seen and generated unseen query embeddings
(configs/pading/)."""
from .config import add_pading_config  # noqa: F401
from .meta_arch import PADing  # noqa: F401
from .checks import check_stage1_checkpoint  # noqa: F401
