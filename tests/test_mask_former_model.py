"""ZeroShotMaskFormer end to end on tiny zs_shapes: training losses, outputs in detectron2's label
spaces, class sets from the metadata, the leakage guard, and its optimiser / schedule."""
import pytest
import torch
import torch.nn.functional as F

import zsi_d2  # noqa: F401
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess

from conftest import TINY_MASK_FORMER_OPTS
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.engine import build_lr_scheduler, build_optimizer
from zsi_d2.errors import InputValueError
from zsi_d2.modeling.class_set import use_class_set
from zsi_d2.modeling.mask_former.inference import instance_inference, panoptic_inference

CONFIG = "configs/mask_former/zs_shapes/mask_former_embedding.yaml"
TRAIN, VAL = "zs_shapes_tiny_train_panoptic", "zs_shapes_tiny_val_panoptic"


def tiny_mask_former_cfg(*opts):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list([*TINY_MASK_FORMER_OPTS, "DATASETS.TEST", f"('{VAL}', 'zs_shapes_tiny_val')",
                         "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", *opts])
    return cfg


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    cfg = tiny_mask_former_cfg()
    model = build_model(cfg)
    mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get(TRAIN)[:2]]
    return cfg, model, batch


def test_training_losses_reach_every_trained_part(model_and_batch):
    cfg, model, batch = model_and_batch
    model.train()
    losses = model(batch)
    layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in [""] + [f"_{i}" for i in range(layers - 1)]}
    model.zero_grad()
    sum(losses.values()).backward()
    for part in ("pixel_decoder", "transformer_decoder", "classifier"):
        params = [p for p in getattr(model, part).parameters() if p.requires_grad]
        assert params and all(p.grad is not None for p in params), part
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_outputs_follow_detectron2s_label_spaces(model_and_batch):
    cfg, model, _ = model_and_batch
    model.eval()
    mapper = DatasetMapper(cfg, is_train=False)
    meta = MetadataCatalog.get(VAL)
    d = DatasetCatalog.get(VAL)[0]
    with torch.no_grad(), use_class_set(model, VAL) as class_set:
        out = model([mapper(d)])[0]
    assert set(class_set.names) == set(meta.seen_classes) | set(meta.unseen_classes)
    assert out["sem_seg"].shape == (len(meta.stuff_classes), d["height"], d["width"])
    panoptic, segments = out["panoptic_seg"]
    assert panoptic.shape == (d["height"], d["width"])
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    for s in segments:  # category_id indexes stuff_classes; isthing is the lookup
        assert 0 <= s["category_id"] < len(meta.stuff_classes) and s["isthing"] == (s["category_id"] in things)
    # The instance view of the same images: pred_classes index its thing_classes (16 things).
    inst_meta = MetadataCatalog.get("zs_shapes_tiny_val")
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val"):
        inst = model([mapper(DatasetCatalog.get("zs_shapes_tiny_val")[0])])[0]["instances"]
    assert len(inst) > 0 and inst.pred_classes.max() < len(inst_meta.thing_classes)
    stuff = set(inst_meta.stuff_classes) - set(inst_meta.thing_classes)
    assert not {inst_meta.thing_classes[c] for c in inst.pred_classes.tolist()} & stuff


# A val image as the test mapper hands it after resizing: 70 x 100, padded to 96 x 128 in the batch
# (so the padding must be cut), with the original 105 x 150 in "height" / "width".
RESIZED, PADDED, ORIGINAL = (70, 100), (96, 128), (105, 150)


def _resized_input_and_predictions(cfg, model):
    image = DatasetMapper(cfg, is_train=False)(DatasetCatalog.get(VAL)[0])["image"].float()
    x = {"image": F.interpolate(image[None], size=RESIZED, mode="bilinear", align_corners=False)[0],
         "height": ORIGINAL[0], "width": ORIGINAL[1]}
    images = model.preprocess_image([x])
    assert tuple(images.tensor.shape[-2:]) == PADDED
    with torch.no_grad():
        pred = model.predict(images.tensor)
    mask_cls = pred["pred_logits"][0]
    up = F.interpolate(pred["pred_masks"], size=PADDED, mode="bilinear", align_corners=False)[0]  # Mask2Former's
    return x, mask_cls, up


def _semantic(mask_cls, masks):
    """Mask2Former's semantic_inference."""
    return torch.einsum("qc,qhw->chw", F.softmax(mask_cls, dim=-1)[..., :-1], masks.sigmoid())


@pytest.mark.parametrize("mode", [None, "zsi"])
def test_outputs_are_at_the_dataset_dict_size_after_resizing(model_and_batch, monkeypatch, mode):
    """Every output at the dict's height x width, from masks upsampled to the padded size, cropped to
    the resized image and resized (Mask2Former's order with panoptic / instance on); classes mapped
    to the dataset's ids (mode "zsi": the unseen classes only, so local index != dataset id)."""
    cfg, model, _ = model_and_batch
    model.eval()
    monkeypatch.setattr(model, "object_mask_threshold", 0.0)  # an untrained model: keep queries
    monkeypatch.setattr(model, "overlap_threshold", 0.0)
    with use_class_set(model, VAL, mode=mode):
        x, mask_cls, up = _resized_input_and_predictions(cfg, model)
        with torch.no_grad():
            out = model([x])[0]
        cs = model.class_set
        ids, thing_ids, is_thing = cs.dataset_ids, cs.thing_ids, cs.is_thing
    masks = sem_seg_postprocess(up, RESIZED, *ORIGINAL)
    sem_seg = out["sem_seg"]
    assert sem_seg.shape == (len(MetadataCatalog.get(VAL).stuff_classes),) + ORIGINAL
    identity = torch.equal(ids, torch.arange(len(sem_seg)))
    assert identity == (mode is None)
    torch.testing.assert_close(sem_seg[ids], _semantic(mask_cls, masks), rtol=1e-5, atol=1e-6)
    others = torch.ones(len(sem_seg), dtype=torch.bool)
    others[ids] = False
    assert (sem_seg[others] == 0).all() and others.sum() == (0 if identity else len(sem_seg) - len(ids))
    seg, info = out["panoptic_seg"]
    expected_seg, expected_info = panoptic_inference(mask_cls, masks, is_thing, 0.0, 0.0)
    assert seg.shape == ORIGINAL and len(info) >= 2
    assert torch.equal(seg, expected_seg)
    assert info == [dict(s, category_id=int(ids[s["category_id"]])) for s in expected_info]
    inst = out["instances"]
    expected = instance_inference(mask_cls, masks, thing_ids >= 0, model.detections_per_image)
    assert inst.image_size == ORIGINAL and inst.pred_masks.shape[-2:] == ORIGINAL and len(inst) > 0
    assert torch.equal(inst.pred_masks, expected.pred_masks)
    assert torch.equal(inst.pred_classes, thing_ids[expected.pred_classes])
    torch.testing.assert_close(inst.scores, expected.scores)


def test_preprocess_normalises_and_pads(model_and_batch):
    """(image - PIXEL_MEAN) / PIXEL_STD, zero-padded at the bottom and right to SIZE_DIVISIBILITY."""
    cfg, model, _ = model_and_batch
    image = torch.randint(0, 256, (3, 70, 100), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    images = model.preprocess_image([{"image": image}])
    assert images.image_sizes == [(70, 100)] and tuple(images.tensor.shape) == (1, 3, 96, 128)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    assert not torch.equal(std, torch.ones_like(std))
    torch.testing.assert_close(images.tensor[0, :, :70, :100], (image.float() - mean) / std)
    assert (images.tensor[0, :, 70:] == 0).all() and (images.tensor[0, :, :, 100:] == 0).all()


def test_semantic_only_resizes_probabilities_after_the_sum(model_and_batch, monkeypatch):
    """Mask2Former with only semantic on (sem_seg_postprocess_before_inference False): the sum at the
    padded size, then crop and resize of the class probabilities; not the logits-first order."""
    cfg, model, _ = model_and_batch
    model.eval()
    monkeypatch.setattr(model, "panoptic_on", False)
    monkeypatch.setattr(model, "instance_on", False)
    with use_class_set(model, VAL):
        x, mask_cls, up = _resized_input_and_predictions(cfg, model)
        with torch.no_grad():
            out = model([x])[0]
        ids = model.class_set.dataset_ids
    assert set(out) == {"sem_seg"} and out["sem_seg"].shape[-2:] == ORIGINAL
    expected = sem_seg_postprocess(_semantic(mask_cls, up), RESIZED, *ORIGINAL)
    torch.testing.assert_close(out["sem_seg"][ids], expected, rtol=1e-5, atol=1e-6)
    logits_first = _semantic(mask_cls, sem_seg_postprocess(up, RESIZED, *ORIGINAL))
    assert (logits_first - expected).abs().max() > 1e-3


def test_adding_unseen_classes_changes_nothing_where_they_never_win(model_and_batch):
    cfg, model, _ = model_and_batch
    model.eval()
    images = model.preprocess_image([DatasetMapper(cfg, is_train=False)(DatasetCatalog.get(VAL)[0])])
    with torch.no_grad():
        with use_class_set(model, VAL, mode="train") as seen_set:
            seen_logits = model.predict(images.tensor)["pred_logits"][0]
        with use_class_set(model, VAL) as all_set:
            all_logits = model.predict(images.tensor)["pred_logits"][0]
    cols = [all_set.names.index(n) for n in seen_set.names] + [len(all_set.names)]
    assert torch.allclose(all_logits[:, cols], seen_logits, atol=1e-5)  # seen + no-object scores unchanged
    unseen_cols = [all_set.names.index(n) for n in all_set.unseen]
    wins = all_logits.argmax(-1)
    keep = ~torch.isin(wins, torch.tensor(unseen_cols))
    assert keep.any()
    assert torch.equal(torch.tensor(cols)[seen_logits.argmax(-1)][keep], wins[keep])


def test_an_unseen_training_label_is_refused(model_and_batch):
    cfg, model, batch = model_and_batch
    model.train()
    meta = MetadataCatalog.get(TRAIN)
    leaked = dict(batch[0])
    inst = leaked["instances"]
    leaked_inst = inst[:1]
    leaked_inst.gt_classes = torch.tensor([meta.stuff_classes.index(meta.unseen_classes[0])])
    leaked["instances"] = leaked_inst
    with pytest.raises(ValueError, match="not in the current class set"):
        model([leaked])


def test_linear_classifier_cannot_name_new_classes():
    cfg = tiny_mask_former_cfg("MODEL.MASK_FORMER.CLASSIFIER", "linear")
    model = build_model(cfg)
    with pytest.raises(InputValueError, match="CLASSIFIER 'embedding'"):
        with use_class_set(model, VAL):
            pass


def test_optimizer_groups_and_poly_schedule(model_and_batch):
    cfg, model, _ = model_and_batch
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    base = cfg.SOLVER.BASE_LR
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    assert backbone and all(by_param[id(p)]["lr"] == pytest.approx(base * 0.1) for p in backbone)
    norms = [m for m in model.pixel_decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(by_param[id(m.weight)]["weight_decay"] == 0.0 for m in norms)
    query = model.transformer_decoder.query_feat.weight
    assert by_param[id(query)]["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY_EMBED
    assert by_param[id(model.classifier.classifier.project.weight)]["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY
    assert by_param[id(model.classifier.classifier.project.weight)]["lr"] == base
    cfg = cfg.clone()
    cfg.SOLVER.MAX_ITER = 20
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER // 2):
        lrs.append(optimizer.param_groups[-1]["lr"])
        scheduler.step()  # no optimizer.step(): the schedule alone is checked
    assert lrs[0] == pytest.approx(base)
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(base * 0.5 ** cfg.SOLVER.POLY_LR_POWER, rel=1e-3)


def test_calibration_gamma_is_chosen_on_held_out_seen_images(model_and_batch):
    """Mask classification takes the same leak-free gamma search as the R-CNNs: queries are the
    detections; raising gamma only moves held-out (seen) objects towards unseen labels."""
    from zsi_d2.engine.calibration import _collect, _share_labelled_unseen, choose_calibration

    cfg, model, _ = model_and_batch
    cfg = cfg.clone()
    cfg.MODEL.ZERO_SHOT.CALIBRATION.DATASETS = ("zs_shapes_tiny_calib",)
    cfg.MODEL.ZERO_SHOT.CALIBRATION.SEARCH_MAX = 6.0
    cfg.MODEL.ZERO_SHOT.CALIBRATION.SEARCH_STEP = 2.0
    cfg.MODEL.ZERO_SHOT.CALIBRATION.TARGET_RATE = 0.99  # (nearly) every gamma qualifies
    cfg.MODEL.ZERO_SHOT.CALIBRATION.MATCH_IOU = 0.0  # an untrained model: every query overlaps every object
    model.eval()
    result = choose_calibration(cfg, model)
    shares = [result["shares"][g] for g in sorted(result["shares"], key=float)]
    assert result["matched_objects_at_gamma"] > 0 and result["gamma"] in (0.0, 2.0, 4.0, 6.0)
    assert shares == sorted(shares) and shares[-1] > shares[0]
    # The search scores uncalibrated cached logits at each gamma: the model's configured gamma
    # (4 here) must not reach the cache, and scoring the cache at 4 gives the share at 4.
    from zsi_d2.modeling.calibration import set_calibration_gamma

    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_calib", mode="gzsi") as class_set:
        set_calibration_gamma(model, 4.0)
        cached = _collect(cfg, model, ["zs_shapes_tiny_calib"])
        set_calibration_gamma(model, 0.0)
        unseen = torch.tensor([n in class_set.unseen for n in class_set.names])
        direct, _ = _share_labelled_unseen(model.classifier, cached, unseen, 0.0, 4.0)
        at_zero, _ = _share_labelled_unseen(model.classifier, cached, unseen, 0.0, 0.0)
    assert at_zero == pytest.approx(result["shares"]["0.0"])
    assert direct == pytest.approx(result["shares"]["4.0"])


def test_inference_applies_the_configured_gamma_to_the_query_logits(model_and_batch):
    """`predict` is uncalibrated (training features, the gamma search); `inference` lowers the seen
    classes' query logits by the configured gamma, so a large gamma turns decisions to unseen."""
    from zsi_d2.modeling.calibration import set_calibration_gamma

    cfg, model, _ = model_and_batch
    model.eval()
    inputs = [DatasetMapper(cfg, is_train=False)(dict(d)) for d in DatasetCatalog.get(VAL)[:1]]
    with torch.no_grad(), use_class_set(model, VAL, mode="gzsi") as class_set:
        images = model.preprocess_image(inputs)
        outputs = model.predict(images.tensor)
        set_calibration_gamma(model, 50.0)
        assert torch.equal(model.predict(images.tensor)["pred_logits"], outputs["pred_logits"])
        calibrated = model.inference(outputs, inputs, images)[0]["instances"]
        set_calibration_gamma(model, 0.0)
        plain = model.inference(outputs, inputs, images)[0]["instances"]
        unseen = {MetadataCatalog.get(VAL).thing_classes.index(n) for n in class_set.unseen
                  if n in MetadataCatalog.get(VAL).thing_classes}
    share = lambda inst: sum(int(c) in unseen for c in inst.pred_classes.tolist()) / max(len(inst), 1)  # noqa: E731
    assert share(calibrated) > share(plain)
