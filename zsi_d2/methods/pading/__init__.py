"""PADing (He et al., CVPR 2023): primitive generation with collaborative relationship alignment and
feature disentanglement. Stage 1 is the mask-classification core (ZeroShotMaskFormer) trained on
seen classes; stage 2 (meta-architecture "PADing") freezes it and re-trains its classifier on real
seen and generated unseen query embeddings (configs/pading/zs_shapes/)."""
from .config import add_pading_config  # noqa: F401
from .meta_arch import PADing  # noqa: F401
from .trainer import PADingStage2Trainer, check_stage1_checkpoint, wrap_trainer  # noqa: F401
