"""Every shipped config builds its model and runs one forward pass on a tiny input (CPU)."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model

from conftest import REPO_ROOT, tiny_cfg

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
# GPU-sized COCO configs of the mask-classification core: tested on their own class spaces below
# (test_mask_former_coco_config_trains_and_infers), not again on zs_shapes.
MASK_FORMER_COCO_CONFIGS = [c for c in CONFIGS if c.startswith(os.path.join("configs", "mask_former", "coco") + os.sep)]


def test_there_are_configs():
    assert CONFIGS, "no configs found"


@pytest.mark.parametrize("config", [c for c in CONFIGS if c not in MASK_FORMER_COCO_CONFIGS])
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
    mask_classification = cfg.MODEL.META_ARCHITECTURE == "ZeroShotMaskFormer"
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
    assert names == ["instance_48_17.yaml", "instance_65_15.yaml", "panoptic_119_14.yaml", "semantic_156_15.yaml"]


@pytest.mark.parametrize("config", MASK_FORMER_COCO_CONFIGS)
def test_mask_former_coco_config_trains_and_infers(config):
    """Each COCO config of the mask-classification core, as shipped (R-50, 100 queries, 12544
    points...), builds on CPU and runs a training and an inference forward pass on a 64 x 64 image
    in its own datasets' class space. Registration is lazy: the class lists come from the COCO
    names' metadata, no COCO file is read. Overridden only what needs assets or a GPU."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Instances

    from zsi_d2.config import get_zsi_d2_cfg
    from zsi_d2.modeling import use_class_set

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    assert cfg.MODEL.META_ARCHITECTURE == "ZeroShotMaskFormer" and cfg.MODEL.DEVICE == "cuda"
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

    # Inference with the GZSI test set's class set (seen + unseen), in its label space.
    (gzsi,) = [n for n in cfg.DATASETS.TEST if MetadataCatalog.get(n).zero_shot_mode == "gzsi"]
    test_meta = MetadataCatalog.get(gzsi)
    flags = cfg.MODEL.MASK_FORMER.TEST
    model.eval()
    with torch.no_grad(), use_class_set(model, gzsi) as class_set:
        assert len(class_set.names) == len(test_meta.seen_classes) + len(test_meta.unseen_classes)
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
