"""What PADing's stage 2 asks of its starting checkpoint, checked before anything loads."""
from ...engine.checkpoint import read_checkpoint
from ...errors import CheckpointMismatchError, InputValueError
from ...modeling.class_set import training_class_names
from .meta_arch import STAGE1_CLASSIFIER

__all__ = ["check_stage1_checkpoint"]

_SEGMENTER = ("backbone.", "pixel_decoder.", "transformer_decoder.")
# A parameter only each stage-1 classifier kind has.
_KIND_KEYS = {"linear": "classifier.linear.weight", "embedding": "classifier.classifier.project.weight"}


def _stage1_kind(state) -> str:
    return next((kind for kind, key in _KIND_KEYS.items() if key in state), "")


def check_stage1_checkpoint(cfg, model):
    """Stage 2 needs a stage-1 checkpoint of this architecture, class set and classifier kind: refuse
    anything else in one line (training would otherwise freeze a randomly initialised segmenter, or
    start the classifier from nothing)."""
    path = cfg.MODEL.WEIGHTS
    kind = cfg.MODEL.PADING.CLASSIFIER
    stage1 = STAGE1_CLASSIFIER[kind]
    stage1_config = ("configs/pading/zs_shapes/pading_stage1.yaml" if stage1 == "linear"
                     else "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
    fix = f"set MODEL.WEIGHTS to the model_final.pth of stage 1 (e.g. {stage1_config})"
    if not path:
        raise InputValueError(f"PADing stage 2 needs a stage-1 checkpoint: MODEL.WEIGHTS is empty; {fix}")
    checkpoint = read_checkpoint(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint["model"].items()}
    found = _stage1_kind(state)
    if found and found != stage1:
        others = [k for k, v in STAGE1_CLASSIFIER.items() if v == found]
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' is a stage 1 with the '{found}' classifier, but MODEL.PADING.CLASSIFIER "
            f"'{kind}' starts from a '{stage1}' one: train stage 1 with MODEL.MASK_FORMER.CLASSIFIER '{stage1}' "
            f"({stage1_config}), or set MODEL.PADING.CLASSIFIER to one of {others} and MODEL.MASK_FORMER.CLASSIFIER "
            f"'{found}'")
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(_SEGMENTER)}
    if stage1 == "embedding":  # the head's own parameters (not the free prototypes) come from stage 1 as they are
        expected.update({k: v for k, v in model.state_dict().items()
                         if k.startswith("classifier.") and k != "classifier.prototypes"})
    else:  # its rows become those of the seen classes (adapt_starting_checkpoint)
        expected[_KIND_KEYS["linear"]] = None
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and expected[k] is not None
             and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' is not a stage-1 checkpoint of this architecture ({len(missing)} segmenter "
            f"parameters missing, {len(wrong)} of other shapes, e.g. {example}); {fix} with the same MODEL settings")
    trained = (checkpoint.get("zsi_d2") or {}).get("trained_classes")
    expected_classes = list(training_class_names(cfg))
    if trained is not None and list(trained) != expected_classes:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' was trained on classes {trained}, not this config's seen classes "
            f"{expected_classes}; {fix} on the same DATASETS.TRAIN")
    if stage1 == "linear" and trained is None:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' does not say which classes its linear classifier's rows are (no 'zsi_d2' "
            f"entry), so they cannot be copied to the stage-2 classifier; {fix}")
