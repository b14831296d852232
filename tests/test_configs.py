"""Every shipped config builds its model and runs one forward pass on a tiny input (CPU)."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model

from conftest import REPO_ROOT, tiny_cfg
from zsi_d2.modeling.mask_former import ZeroShotMaskFormer
from zsi_d2.modeling.semantic import ZeroShotSemanticSegmentor

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
# GPU-sized COCO configs of the mask-classification core and of PADing: tested on their own class spaces
# below (test_mask_former_coco_config_trains_and_infers, test_pading_coco_stage2_builds), not again on zs_shapes.
MASK_FORMER_COCO_CONFIGS = [c for c in CONFIGS if c.startswith(os.path.join("configs", "mask_former", "coco") + os.sep)]
PADING_COCO_CONFIGS = [c for c in CONFIGS if c.startswith(os.path.join("configs", "pading", "coco") + os.sep)]
# ZegFormer's GPU configs (configs/zegformer/<dataset>/): tested like the core's, in their own class spaces.
ZEGFORMER_GPU_CONFIGS = [c for c in CONFIGS if c.startswith(os.path.join("configs", "zegformer") + os.sep)
                         and not c.startswith(os.path.join("configs", "zegformer", "zs_shapes") + os.sep)]
PADING_COCO_STAGE1 = [c for c in PADING_COCO_CONFIGS if c.endswith("_stage1.yaml")]
PADING_COCO_STAGE2 = [c for c in PADING_COCO_CONFIGS if c.endswith("_stage2.yaml")]
COCO_TASKS = ["instance_48_17", "instance_65_15", "panoptic_119_14", "semantic_156_15"]


def test_there_are_configs():
    assert CONFIGS, "no configs found"


@pytest.mark.parametrize("config", [c for c in CONFIGS
                                    if c not in MASK_FORMER_COCO_CONFIGS + PADING_COCO_CONFIGS + ZEGFORMER_GPU_CONFIGS])
def test_config_builds_and_runs_forward(config):
    # Dataset names are swapped for the tiny zs_shapes preset: only the architecture is under test.
    cfg = tiny_cfg("MODEL.DEVICE", "cpu", "MODEL.ZERO_SHOT.EMBEDDING.DIM", "0",
                   "MODEL.ZERO_SHOT.EMBEDDING.PATH", "", config=config)
    cfg.MODEL.WEIGHTS = ""
    for key in ("EFFICIENTNET",):
        if key in cfg.MODEL:
            cfg.MODEL[key].WEIGHTS = ""
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8).float(), "height": 64, "width": 80}])
    if isinstance(model, ZeroShotSemanticSegmentor):  # pixel-level: class scores in stuff_classes channels
        assert len(out) == 1 and set(out[0]) == {"sem_seg"}
        assert out[0]["sem_seg"].shape == (len(model.class_set.dataset_classes), 64, 80)
        return
    mask_classification = isinstance(model, ZeroShotMaskFormer)  # the core and the methods built on it
    if mask_classification:  # outputs as its TEST flags ask; its instances always carry masks
        flags = cfg.MODEL.MASK_FORMER.TEST
        expected = {k for k, on in [("sem_seg", flags.SEMANTIC_ON), ("panoptic_seg", flags.PANOPTIC_ON),
                                    ("instances", flags.INSTANCE_ON)] if on}
        assert len(out) == 1 and set(out[0]) == expected
        if not flags.INSTANCE_ON:
            return
    assert len(out) == 1 and "instances" in out[0]
    instances = out[0]["instances"]
    assert instances.image_size == (64, 80)
    assert instances.has("pred_masks") == (cfg.MODEL.MASK_ON or mask_classification)


@pytest.mark.parametrize("config", CONFIGS)
def test_config_names_registered_datasets(config):
    from detectron2.data import DatasetCatalog

    from zsi_d2.config import get_zsi_d2_cfg

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    assert names and set(names) <= set(DatasetCatalog.list()), f"unregistered: {set(names) - set(DatasetCatalog.list())}"


@pytest.mark.parametrize("split, lr, warmup", [("48_17", 0.01, 500), ("65_15", 0.0075, 7000)])
def test_coco_zsi_configs_follow_the_reference_schedule(split, lr, warmup):
    """The reference ZSI configs per split (../shared/reference, section 2, and the issue's review)."""
    from zsi_d2.config import get_zsi_d2_cfg

    for name in ("zsi_mask_rcnn_R_101_FPN_1x", "zsd_faster_rcnn_R_101_FPN_1x", "zsi_mask_rcnn_R_101_FPN_1x_reference_protocol"):
        cfg = get_zsi_d2_cfg()
        cfg.merge_from_file(os.path.join(REPO_ROOT, f"configs/zsi/coco_{split}/{name}.yaml"))
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.IMS_PER_BATCH) == (lr, warmup, 8)
        assert abs(cfg.SOLVER.WARMUP_FACTOR - 1 / 3) < 1e-9
        clip = cfg.SOLVER.CLIP_GRADIENTS
        assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE) == (True, "full_model", 35.0, 2.0)
        assert cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN == 2000 and cfg.MODEL.ZSI.GZSI_PER_GROUP_NMS
        expected = "seen_projection" if name.endswith("reference_protocol") else "direct"
        assert cfg.MODEL.ZSI.UNSEEN_SCORING == expected


def test_each_coco_split_names_its_own_word_vector_file():
    from zsi_d2.config import get_zsi_d2_cfg

    paths = {}
    for split in ("48_17", "65_15"):
        cfg = get_zsi_d2_cfg()
        cfg.merge_from_file(os.path.join(REPO_ROOT, f"configs/zsi/coco_{split}/zsi_mask_rcnn_R_101_FPN_1x.yaml"))
        assert cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE == "word_vectors" and cfg.MODEL.ZERO_SHOT.EMBEDDING.DIM == 300
        paths[split] = cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH
    assert paths == {s: f"datasets/embeddings/word_w2v_withbg_{s}.txt" for s in paths}


def test_mask_former_coco_configs_are_all_found():
    names = sorted(os.path.basename(c) for c in MASK_FORMER_COCO_CONFIGS)
    assert names == [f"{t}.yaml" for t in COCO_TASKS]
    names = sorted(os.path.basename(c) for c in PADING_COCO_CONFIGS)
    assert names == sorted(f"{t}_stage{k}.yaml" for t in COCO_TASKS for k in (1, 2))


def _coco_cfg(config):
    from zsi_d2.config import get_zsi_d2_cfg

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    return cfg


def _on_cpu_without_assets(cfg):
    """Overridden only what needs assets or a GPU."""
    assert cfg.MODEL.DEVICE == "cuda"
    assert cfg.MODEL.WEIGHTS and "://" not in cfg.MODEL.WEIGHTS  # a local file, never a URL
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.WEIGHTS", "",
        # no CLIP checkpoint / word-vector file in the test: multi-hot words of the split's names
        "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes",
        "MODEL.ZERO_SHOT.EMBEDDING.PATH", "",
        "MODEL.ZERO_SHOT.EMBEDDING.DIM", "0",
        "SOLVER.AMP.ENABLED", "False",
    ])
    return cfg


def _core_of(config):
    """The core config a PADing COCO config builds on (configs/mask_former/coco/<task>.yaml)."""
    task = os.path.basename(config).replace("_stage1.yaml", "").replace("_stage2.yaml", "").replace(".yaml", "")
    return os.path.join("configs", "mask_former", "coco", task + ".yaml")


@pytest.mark.parametrize("config", MASK_FORMER_COCO_CONFIGS + PADING_COCO_STAGE1 + ZEGFORMER_GPU_CONFIGS)
def test_mask_former_coco_config_trains_and_infers(config):
    """Each COCO config of the mask-classification core and each PADing stage 1 (its closed linear
    classifier), as shipped (R-50, 100 queries, 12544 points...), builds on CPU and runs a training
    and an inference forward pass on a 64 x 64 image in its own datasets' class space. Registration
    is lazy: the class lists come from the COCO names' metadata, no COCO file is read."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Instances

    from zsi_d2.errors import InputValueError
    from zsi_d2.modeling import use_class_set

    cfg = _on_cpu_without_assets(_coco_cfg(config))
    assert cfg.MODEL.META_ARCHITECTURE in ("ZeroShotMaskFormer", "ZegFormer")
    torch.manual_seed(0)
    model = build_model(cfg)

    # Targets in the class space the config's mapper writes: thing_classes for instances, else
    # stuff_classes (panoptic: detectron2's convention; semantic: label values).
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    space = meta.thing_classes if cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_instance" else meta.stuff_classes
    seen = [space.index(n) for n in meta.seen_classes if n in space]
    unseen = [space.index(n) for n in meta.unseen_classes if n in space]
    assert len(model.class_set.names) == len(meta.seen_classes) and seen and unseen
    with pytest.raises(ValueError):  # the leakage guard: an unseen label is no training target
        model.class_set.to_local(torch.tensor([unseen[0]]))

    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
    gt = Instances((64, 64))
    gt.gt_classes = torch.tensor([seen[0], seen[-1]], dtype=torch.long)
    gt.gt_masks = torch.rand(2, 64, 64, generator=g) > 0.5
    model.train()
    losses = model([{"image": image, "height": 64, "width": 64, "instances": gt}])
    assert len(losses) == 3 * cfg.MODEL.MASK_FORMER.DEC_LAYERS  # ce, mask, dice on every prediction
    assert all(torch.isfinite(v) for v in losses.values()), losses

    # Inference with the GZSI test set's class set (seen + unseen), in its label space; a closed
    # linear head (PADing's stage 1, not evaluated) can name only the seen classes: the training set's.
    test_sets = _coco_cfg(_core_of(config) if config in PADING_COCO_STAGE1 else config).DATASETS.TEST
    (gzsi,) = [n for n in test_sets if MetadataCatalog.get(n).zero_shot_mode == "gzsi"]
    infer_on = gzsi
    if cfg.MODEL.MASK_FORMER.CLASSIFIER == "linear":
        assert cfg.DATASETS.TEST == ()
        with pytest.raises(InputValueError, match="cannot score"), use_class_set(model, gzsi):
            pass
        infer_on = cfg.DATASETS.TRAIN[0]
    test_meta = MetadataCatalog.get(infer_on)
    flags = cfg.MODEL.MASK_FORMER.TEST
    model.eval()
    with torch.no_grad(), use_class_set(model, infer_on) as class_set:
        active = len(test_meta.seen_classes) + (len(test_meta.unseen_classes) if infer_on == gzsi else 0)
        assert len(class_set.names) == active
        (out,) = model([{"image": image, "height": 64, "width": 64}])
    expected = {k for k, on in [("sem_seg", flags.SEMANTIC_ON), ("panoptic_seg", flags.PANOPTIC_ON),
                                ("instances", flags.INSTANCE_ON)] if on}
    assert set(out) == expected
    if flags.SEMANTIC_ON:
        assert out["sem_seg"].shape == (len(test_meta.stuff_classes), 64, 64)
    if flags.PANOPTIC_ON:
        assert out["panoptic_seg"][0].shape == (64, 64)
    if flags.INSTANCE_ON:
        instances = out["instances"]
        assert instances.image_size == (64, 64) and instances.has("pred_masks")
        assert ((instances.pred_classes >= 0) & (instances.pred_classes < len(test_meta.thing_classes))).all()


@pytest.mark.parametrize("config", PADING_COCO_STAGE2)
def test_pading_coco_stage2_builds(config):
    """Each PADing stage 2 on COCO, as shipped (PADing's free linear head over all classes on a
    linear stage 1), builds on CPU and runs an inference forward pass on the GZSI test set's class set
    (seen + unseen: the classes stage 2 trains)."""
    from detectron2.data import MetadataCatalog

    from zsi_d2.modeling import use_class_set

    cfg = _on_cpu_without_assets(_coco_cfg(config))
    assert cfg.MODEL.META_ARCHITECTURE == "PADing" and cfg.MODEL.PADING.CLASSIFIER == "reference"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    (gzsi,) = [n for n in cfg.DATASETS.TEST if MetadataCatalog.get(n).zero_shot_mode == "gzsi"]
    meta = MetadataCatalog.get(gzsi)
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad(), use_class_set(model, gzsi) as class_set:
        assert len(class_set.names) == len(meta.seen_classes) + len(meta.unseen_classes)
        (out,) = model([{"image": image, "height": 64, "width": 64}])
    flags = cfg.MODEL.MASK_FORMER.TEST
    assert set(out) == {k for k, on in [("sem_seg", flags.SEMANTIC_ON), ("panoptic_seg", flags.PANOPTIC_ON),
                                        ("instances", flags.INSTANCE_ON)] if on}


# ---- the published values of the COCO configs (a changed value fails here) -------------------------

def _values(cfg, keys):
    """{dotted key: value} of `cfg` for `keys`."""
    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node[part]
        out[key] = tuple(node) if isinstance(node, list) else node
    return out


# PADing's CLIP prompt ensemble: IMAGENET_TEMPLATES_SELECT of heshuting555/PADing
# PADing/third_party/imagenet_templates.py, used by PADing_model.py's get_embeddings.
PADING_PROMPT_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                           "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
                           "A photo of a {} in the scene")

# Stage 1 = PADing's configs/<task>/pretrain.yaml on its Base-*.yaml (Mask2Former R-50).
_STAGE1_COMMON = {
    "SOLVER.IMS_PER_BATCH": 16, "SOLVER.BASE_LR": 1e-4, "SOLVER.OPTIMIZER": "ADAMW", "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100, "MODEL.MASK_FORMER.DEC_LAYERS": 10,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0, "MODEL.MASK_FORMER.MASK_WEIGHT": 5.0, "MODEL.MASK_FORMER.DICE_WEIGHT": 5.0,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 6,
    "INPUT.RANDOM_FLIP": "horizontal",
}
_STEP_SCHEDULE = {"SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR", "SOLVER.MAX_ITER": 140350,
                  "SOLVER.STEPS": (126315, 133333), "SOLVER.WEIGHT_DECAY": 0.05, "SOLVER.AMP.ENABLED": True}
_CLIP = {"MODEL.ZERO_SHOT.EMBEDDING.SOURCE": "clip", "MODEL.ZERO_SHOT.EMBEDDING.CLIP_ARCH": "ViT-B-16",
         "MODEL.ZERO_SHOT.EMBEDDING.DIM": 512, "MODEL.ZERO_SHOT.EMBEDDING.PROMPT_TEMPLATES": PADING_PROMPT_TEMPLATES}


def _lsj(size):  # Base-COCO-*Segmentation.yaml (MIN_SCALE, MAX_SCALE) + pretrain.yaml (IMAGE_SIZE)
    return {"INPUT.AUGMENTATION": "lsj", "INPUT.IMAGE_SIZE": size, "INPUT.MIN_SCALE": 0.1, "INPUT.MAX_SCALE": 2.0}


def _word_vectors(split):  # PADing's VEC_PATH embeddings/coco/word_w2v_withbg_<split>.txt
    return {"MODEL.ZERO_SHOT.EMBEDDING.SOURCE": "word_vectors", "MODEL.ZERO_SHOT.EMBEDDING.DIM": 300,
            "MODEL.ZERO_SHOT.EMBEDDING.PATH": f"datasets/embeddings/word_w2v_withbg_{split}.txt"}


CORE_PUBLISHED = {
    "panoptic_119_14": {**_STEP_SCHEDULE, **_lsj(928), **_CLIP, "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic"},
    "instance_48_17": {**_STEP_SCHEDULE, **_lsj(960), **_word_vectors("48_17"),
                       "INPUT.DATASET_MAPPER_NAME": "mask_former_instance"},
    "instance_65_15": {**_STEP_SCHEDULE, **_lsj(960), **_word_vectors("65_15"),
                       "INPUT.DATASET_MAPPER_NAME": "mask_former_instance"},
    # Base-COCOStuff-171.yaml: resize 320-960 (int(x * 0.1 * 640) for x in 5..15), 640 crops, SSD jitter
    "semantic_156_15": {
        **_CLIP, "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic", "INPUT.AUGMENTATION": "resize_then_crop",
        "INPUT.MIN_SIZE_TRAIN": tuple(int(x * 0.1 * 640) for x in range(5, 16)), "INPUT.MAX_SIZE_TRAIN": 2560,
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice", "INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "absolute",
        "INPUT.CROP.SIZE": (640, 640), "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0, "INPUT.COLOR_AUG_SSD": True,
        "INPUT.MIN_SIZE_TEST": 640, "INPUT.MAX_SIZE_TEST": 2560,
        "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR", "SOLVER.POLY_LR_POWER": 0.9, "SOLVER.MAX_ITER": 120000,
        "SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.WARMUP_ITERS": 0, "SOLVER.AMP.ENABLED": False},
}

# Stage 2 = PADing's configs/<task>/PADing.yaml (instance: shipped for 48/17) + the optimisers of
# engine_ours/defaults.py (generator Adam at GENERATOR_LR, no weight decay; classifier SGD at BASE_LR,
# momentum 0.9, weight decay 5e-4) + PADing/config.py's defaults where PADing.yaml leaves a key.
_STAGE2_COMMON = {
    "MODEL.META_ARCHITECTURE": "PADing", "MODEL.MASK_FORMER.CLASSIFIER": "linear", "MODEL.PADING.CLASSIFIER": "reference",
    "MODEL.PADING.GENERATOR": "primitive", "MODEL.PADING.NUM_PRIMITIVES": 400, "MODEL.PADING.GENERATOR_LAYERS": 3,
    "MODEL.PADING.GENERATOR_HEADS": 8, "MODEL.PADING.GENERATOR_DIM_FEEDFORWARD": 1024,
    "MODEL.PADING.ALIGNMENT_WEIGHT": 1.0, "MODEL.PADING.RELATION_WEIGHT": 1.0, "MODEL.PADING.RECONSTRUCTION_WEIGHT": 0.5,
    "MODEL.PADING.IMAGES_PER_BATCH": 12, "SOLVER.IMS_PER_BATCH": 12,
    "MODEL.PADING.CLASSIFIER_LR": 1e-3, "MODEL.PADING.CLASSIFIER_MOMENTUM": 0.9,
    "MODEL.PADING.CLASSIFIER_WEIGHT_DECAY": 5e-4,
    "SOLVER.OPTIMIZER": "ADAM", "SOLVER.BASE_LR": 5e-4, "SOLVER.WEIGHT_DECAY": 0.0,
    "SOLVER.WARMUP_FACTOR": 1.0, "SOLVER.WARMUP_ITERS": 10, "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.AMP.ENABLED": True,
}
_INSTANCE_STAGE2 = {
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0, "MODEL.PADING.STRUCTURE_WEIGHT": 1e-3,
    "MODEL.PADING.UNSEEN_CLASS_WEIGHT": 2.0, "MODEL.PADING.NUM_CHOOSE": 5, "MODEL.PADING.GENERATOR_DROPOUT": 0.1,
    "MODEL.PADING.DISENTANGLE_DROPOUT": 0.1, "SOLVER.MAX_ITER": 4000, "SOLVER.STEPS": (),
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR", "SOLVER.CHECKPOINT_PERIOD": 2000, **_lsj(960),
}
STAGE2_PUBLISHED = {
    "panoptic_119_14": {
        "MODEL.MASK_FORMER.CLASS_WEIGHT": 5.0, "MODEL.PADING.STRUCTURE_WEIGHT": 1e-4,
        "MODEL.PADING.UNSEEN_CLASS_WEIGHT": 5.0, "MODEL.PADING.NUM_CHOOSE": 5, "MODEL.PADING.GENERATOR_DROPOUT": 0.1,
        "MODEL.PADING.DISENTANGLE_DROPOUT": 0.1, "SOLVER.MAX_ITER": 20000, "SOLVER.STEPS": (14000, 18500),
        "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR", **_lsj(928), **_CLIP},
    "instance_48_17": {**_INSTANCE_STAGE2, **_word_vectors("48_17")},
    "instance_65_15": {**_INSTANCE_STAGE2, **_word_vectors("65_15")},
    "semantic_156_15": {
        "MODEL.MASK_FORMER.CLASS_WEIGHT": 5.0, "MODEL.PADING.STRUCTURE_WEIGHT": 1e-3,
        "MODEL.PADING.UNSEEN_CLASS_WEIGHT": 5.0, "MODEL.PADING.NUM_CHOOSE": 17, "MODEL.PADING.GENERATOR_DROPOUT": 0.3,
        "MODEL.PADING.DISENTANGLE_DROPOUT": 0.2, "SOLVER.MAX_ITER": 2000, "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
        "SOLVER.POLY_LR_POWER": 0.9, "INPUT.AUGMENTATION": "resize_then_crop", "INPUT.CROP.SIZE": (640, 640), **_CLIP},
}


@pytest.mark.parametrize("task", COCO_TASKS)
def test_coco_stage1_configs_are_padings_pretrain(task):
    """The core's COCO configs hold PADing's stage-1 values; PADing's stage-1 configs are those
    configs with the closed linear classifier, no test set (it cannot name unseen classes) and
    their own output folder, nothing else changed."""
    core = _coco_cfg(os.path.join("configs", "mask_former", "coco", f"{task}.yaml"))
    expected = {**_STAGE1_COMMON, **CORE_PUBLISHED[task], "MODEL.MASK_FORMER.CLASSIFIER": "embedding"}
    assert _values(core, expected) == expected
    stage1 = _coco_cfg(os.path.join("configs", "pading", "coco", f"{task}_stage1.yaml"))
    assert (stage1.MODEL.MASK_FORMER.CLASSIFIER, stage1.DATASETS.TEST) == ("linear", ())
    assert stage1.OUTPUT_DIR == f"output/pading/coco/{task}_stage1"
    core.defrost()
    core.MODEL.MASK_FORMER.CLASSIFIER, core.DATASETS.TEST, core.OUTPUT_DIR = "linear", (), stage1.OUTPUT_DIR
    assert stage1 == core


@pytest.mark.parametrize("task", COCO_TASKS)
def test_coco_stage2_configs_are_padings_released_settings(task):
    """PADing's stage-2 values per task; the segmenter and the data are stage 1's (its checkpoint
    must fit: only the matching's class weight, the meta-architecture, the weights and MODEL.PADING
    differ), the weights are stage 1's model_final.pth, the test sets the core's."""
    stage2 = _coco_cfg(os.path.join("configs", "pading", "coco", f"{task}_stage2.yaml"))
    expected = {**_STAGE2_COMMON, **STAGE2_PUBLISHED[task]}
    assert _values(stage2, expected) == expected
    stage1 = _coco_cfg(os.path.join("configs", "pading", "coco", f"{task}_stage1.yaml"))
    assert stage2.MODEL.WEIGHTS == os.path.join(stage1.OUTPUT_DIR, "model_final.pth")
    assert stage2.DATASETS.TEST == _coco_cfg(_core_of(f"{task}_stage2.yaml")).DATASETS.TEST
    assert (stage2.DATASETS.TRAIN, stage2.INPUT) == (stage1.DATASETS.TRAIN, stage1.INPUT)
    assert stage2.OUTPUT_DIR == f"output/pading/coco/{task}_stage2"
    segmenter = [stage2.MODEL.clone(), stage1.MODEL.clone()]
    for m in segmenter:
        m.defrost()
        for key in ("META_ARCHITECTURE", "WEIGHTS", "PADING"):
            m.pop(key)
        m.MASK_FORMER.pop("CLASS_WEIGHT")
    assert segmenter[0] == segmenter[1]


@pytest.mark.parametrize("task", COCO_TASKS)
def test_coco_stage2_generator_lr_schedule(task):
    """The generator's LR over stage 2 as the reference's scheduler gives it: panoptic x0.1 at 14k and
    18.5k of 20k; instance constant over 4k (its inherited steps are past MAX_ITER); semantic poly 0.9
    over 2k."""
    from zsi_d2.engine.lr_scheduler import build_lr_scheduler

    cfg = _coco_cfg(os.path.join("configs", "pading", "coco", f"{task}_stage2.yaml"))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    base = 5e-4
    expected = {
        "panoptic_119_14": {0: base, 13999: base, 14000: base * 0.1, 18499: base * 0.1, 18500: base * 0.01},
        "instance_48_17": {0: base, 2000: base, 3999: base},
        "instance_65_15": {0: base, 2000: base, 3999: base},
        "semantic_156_15": {0: base, 1000: base * 0.5 ** 0.9, 1999: base * (1 / 2000) ** 0.9},
    }[task]
    assert {i: lrs[i] for i in expected} == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("task", COCO_TASKS)
def test_coco_stage1_mapper_follows_the_config(task):
    """The training mapper each COCO config builds applies the published augmentations."""
    from zsi_d2.data.mappers import build_dataset_mapper

    cfg = _coco_cfg(os.path.join("configs", "pading", "coco", f"{task}_stage1.yaml"))
    augs = [getattr(a, "tfm", a) for a in build_dataset_mapper(cfg, True).augmentations.augs]
    names = [type(a).__name__ for a in augs]
    if task.startswith("semantic"):
        assert names == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "ColorAugSSDTransform",
                         "RandomFlip"]
        assert augs[0].short_edge_length == tuple(range(320, 961, 64)) and augs[0].max_size == 2560
        assert tuple(augs[1].crop_aug.crop_size) == (640, 640) and augs[1].ignored_category == 255
    else:
        size = {"panoptic": 928, "instance": 960}[task.split("_")[0]]
        assert names == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]
        assert (augs[1].min_scale, augs[1].max_scale, augs[1].target_height, augs[1].target_width) == (0.1, 2.0, size, size)
        assert tuple(augs[2].crop_size) == (size, size)


# ZegFormer as released (dingjiansw101/ZegFormer configs/<benchmark>/zegformer_R50_bs32_*_vit16_*.yaml and their
# Base-*.yaml; MaskFormer's defaults where they leave a key), and their GZSS evaluation configs.
_ZEGFORMER_COMMON = {
    "MODEL.META_ARCHITECTURE": "ZegFormer", "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.STRIDE_IN_1X1": False, "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "FPNPixelDecoder", "MODEL.SEM_SEG_HEAD.CONVS_DIM": 256,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256, "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "StandardTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5", "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.DEC_LAYERS": 6, "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100, "MODEL.MASK_FORMER.NHEADS": 8, "MODEL.MASK_FORMER.DROPOUT": 0.1,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048, "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True, "MODEL.MASK_FORMER.CRITERION": "full_mask",
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0, "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.ZERO_SHOT.LOGIT_SCALE": 100.0, "MODEL.ZERO_SHOT.EMBEDDING.SOURCE": "clip",
    "MODEL.ZERO_SHOT.EMBEDDING.CLIP_ARCH": "ViT-B-16", "MODEL.ZERO_SHOT.EMBEDDING.DIM": 512,
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic", "INPUT.AUGMENTATION": "resize_then_crop",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice", "INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "absolute",
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0, "INPUT.COLOR_AUG_SSD": True, "INPUT.FORMAT": "RGB",
    "SOLVER.IMS_PER_BATCH": 32, "SOLVER.BASE_LR": 1e-4, "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.BACKBONE_MULTIPLIER": 0.1, "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
    "SOLVER.POLY_LR_POWER": 0.9, "SOLVER.WARMUP_ITERS": 0, "SOLVER.CLIP_GRADIENTS.ENABLED": True,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False, "MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION": False,
}
_SIZES_512 = tuple(int(x * 0.1 * 512) for x in range(5, 21))
ZEGFORMER_PUBLISHED = {
    "coco/semantic_156_15": {
        "MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE": "imagenet_select",
        "INPUT.MIN_SIZE_TRAIN": tuple(int(x * 0.1 * 640) for x in range(5, 16)), "INPUT.MAX_SIZE_TRAIN": 2560,
        "INPUT.CROP.SIZE": (640, 640), "INPUT.MIN_SIZE_TEST": 640, "INPUT.MAX_SIZE_TEST": 2560,
        "SOLVER.MAX_ITER": 60000, "SOLVER.AMP.ENABLED": True, "DATASETS.TRAIN": ("coco_stuff_zss_156_15_train",)},
    "voc/semantic_15_5": {
        "MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE": "single",
        "INPUT.MIN_SIZE_TRAIN": _SIZES_512, "INPUT.MAX_SIZE_TRAIN": 2048, "INPUT.CROP.SIZE": (512, 512),
        "INPUT.MIN_SIZE_TEST": 512, "INPUT.MAX_SIZE_TEST": 2048, "SOLVER.MAX_ITER": 10000,
        "SOLVER.AMP.ENABLED": False, "DATASETS.TRAIN": ("voc_zss_15_5_train",)},
    "ade20k_full/semantic_572_275": {
        "MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE": "imagenet_select", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 65535,
        "INPUT.MIN_SIZE_TRAIN": _SIZES_512, "INPUT.MAX_SIZE_TRAIN": 2048, "INPUT.CROP.SIZE": (512, 512),
        "INPUT.MIN_SIZE_TEST": 512, "INPUT.MAX_SIZE_TEST": 2048, "SOLVER.MAX_ITER": 60000,
        "SOLVER.AMP.ENABLED": False, "DATASETS.TRAIN": ("ade20k_full_zss_572_275_train",)},
}
# The GZSS evaluation configs: the image branch on, fused as each release sets it; nothing else changed.
ZEGFORMER_GZSS_EVAL = {
    "coco/semantic_156_15": {"MODEL.MASK_FORMER.ENSEMBLING": True, "MODEL.MASK_FORMER.GZERO_CALIBRATE": 0.1},
    "voc/semantic_15_5": {"MODEL.MASK_FORMER.ENSEMBLING": False, "MODEL.MASK_FORMER.GZERO_CALIBRATE": -1.0},
    "ade20k_full/semantic_572_275": {"MODEL.MASK_FORMER.ENSEMBLING": True, "MODEL.MASK_FORMER.GZERO_CALIBRATE": 0.0,
                                     "SOLVER.AMP.ENABLED": True},
}


@pytest.mark.parametrize("name", sorted(ZEGFORMER_PUBLISHED))
def test_zegformer_gpu_configs_are_the_released_settings(name):
    cfg = _coco_cfg(os.path.join("configs", "zegformer", f"{name}.yaml"))
    expected = {**_ZEGFORMER_COMMON, **ZEGFORMER_PUBLISHED[name]}
    assert _values(cfg, expected) == expected
    assert cfg.DATASETS.TEST == tuple(cfg.DATASETS.TRAIN[0].replace("_train", s) for s in ("_val", "_val_zsi"))
    evaluation = _coco_cfg(os.path.join("configs", "zegformer", f"{name}_gzss_eval.yaml"))
    branch = {"MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION": True, "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED": "ViT-B-16",
              **ZEGFORMER_GZSS_EVAL[name]}
    assert _values(evaluation, branch) == branch
    for key in [k for k in branch if k not in ("SOLVER.AMP.ENABLED",)] + ["OUTPUT_DIR"]:
        node, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        target = evaluation
        for part in filter(None, node.split(".")):
            target = target[part]
        target[leaf] = _values(cfg, [key])[key]
    evaluation.SOLVER.AMP.ENABLED = cfg.SOLVER.AMP.ENABLED
    assert evaluation == cfg
