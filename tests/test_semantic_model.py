"""The pixel-level zero-shot semantic model (ZeroShotSemanticSegmentor): SPNet's projection and the
closed linear classifier on detectron2's DeepLabV3+ head; training labels through the class set;
calibrated test-time probabilities in the dataset's channels; names added at test time."""
import copy

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.utils.events import EventStorage

import zsi_d2
from conftest import REPO_ROOT  # noqa: F401  (conftest sets up the dataset root)
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import InputValueError
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.semantic import EmbeddingPixelClassifier, LinearPixelClassifier, classify_rows

SPNET = "configs/semantic/zs_shapes/spnet.yaml"
DEEPLAB_SEEN = "configs/semantic/zs_shapes/deeplab_seen.yaml"
TRAIN, VAL, VAL_ZSI = "zs_shapes_tiny_train_panoptic", "zs_shapes_tiny_val_panoptic", "zs_shapes_tiny_val_zsi_panoptic"


def semantic_cfg(*opts, config=SPNET):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{VAL}', '{VAL_ZSI}')",
                         "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes", "MODEL.EFFICIENTNET.WEIGHTS", "",
                         "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", *opts])
    return cfg


def _batch(cfg, dataset=TRAIN, n=2, is_train=True):
    mapper = DatasetMapper(cfg, is_train=is_train)
    records = [copy.deepcopy(d) for d in DatasetCatalog.get(dataset)[:n]]
    return [mapper(r) for r in records], records


def test_the_head_is_detectron2s_deeplab_head_and_the_loss_trains():
    cfg = semantic_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.head, DeepLabV3PlusHead) and model.head.decoder_only
    batch, _ = _batch(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    with EventStorage():
        for _ in range(6):
            loss = model(batch)["loss_sem_seg"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses  # the same two images: the loss must fall
    # every trainable parameter got a gradient: DistributedDataParallel (several processes) needs it
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_training_labels_become_local_and_an_unseen_label_is_refused():
    """Targets are indices into the training class set; a pixel of an unseen class in a training
    label map is the leakage guard's error, not a silently trained label."""
    cfg = semantic_cfg()
    model = build_model(cfg)
    batch, _ = _batch(cfg)
    targets = model.prepare_targets(batch, model.preprocess_image(batch))
    labelled = targets != 255
    assert labelled.any() and targets[labelled].max() < len(model.class_set.names)
    meta = MetadataCatalog.get(TRAIN)
    unseen_id = meta.stuff_classes.index(meta.unseen_classes[0])
    batch[0]["sem_seg"][:4, :4] = unseen_id
    with pytest.raises(InputValueError, match="not in the current class set"):
        model.prepare_targets(batch, model.preprocess_image(batch))


def test_inference_writes_probabilities_into_the_datasets_channels():
    cfg = semantic_cfg()
    model = build_model(cfg).eval()
    batch, records = _batch(cfg, VAL, is_train=False)
    with torch.no_grad():
        out = model(batch)
    meta = MetadataCatalog.get(VAL)
    sem = out[0]["sem_seg"]
    assert sem.shape == (len(meta.stuff_classes), records[0]["height"], records[0]["width"])
    torch.testing.assert_close(sem.sum(0), torch.ones_like(sem[0]), rtol=0, atol=1e-4)  # gzsi: every class scored
    with torch.no_grad(), use_class_set(model, VAL_ZSI):
        zsi = model(batch)[0]["sem_seg"]
    unseen = [meta.stuff_classes.index(n) for n in meta.unseen_classes]
    seen = [i for i in range(len(meta.stuff_classes)) if i not in unseen]
    assert zsi[seen].abs().max() == 0 and torch.allclose(zsi[unseen].sum(0), torch.ones_like(zsi[0]), atol=1e-4)


def test_calibration_subtracts_gamma_from_the_seen_probabilities():
    """SPNet's calibration: p_c - gamma for the seen classes, the unseen ones unchanged."""
    cfg = semantic_cfg()
    model = build_model(cfg).eval()
    batch, _ = _batch(cfg, VAL, n=1, is_train=False)
    with torch.no_grad():
        plain = model(batch)[0]["sem_seg"]
        zsi_d2.modeling.calibration.set_calibration_gamma(model, 0.3)
        calibrated = model(batch)[0]["sem_seg"]
    meta = MetadataCatalog.get(VAL)
    seen = torch.tensor([n not in meta.unseen_classes for n in meta.stuff_classes])
    torch.testing.assert_close(calibrated[seen], plain[seen] - 0.3)
    torch.testing.assert_close(calibrated[~seen], plain[~seen])


def test_embedding_scores_are_the_dot_product_with_unit_name_embeddings():
    cfg = semantic_cfg()
    classifier = build_model(cfg).classifier
    assert isinstance(classifier, EmbeddingPixelClassifier)
    rows = torch.randn(5, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    bank = classifier.classes
    names = bank.active_names
    expected = (rows @ classifier.project.weight[:, :, 0, 0].t() + classifier.project.bias) @ \
        torch.nn.functional.normalize(bank.embeddings[bank.index_of(names)], dim=1).t()
    torch.testing.assert_close(classify_rows(classifier, rows), expected)


def test_the_linear_classifier_is_a_closed_set_that_refuses_unseen_names():
    cfg = semantic_cfg(config=DEEPLAB_SEEN)
    model = build_model(cfg)
    assert isinstance(model.classifier, LinearPixelClassifier)
    meta = MetadataCatalog.get(VAL)
    with pytest.raises(InputValueError, match="cannot score .*MODEL.PIXEL_CLASSIFIER.NAME 'embedding'"):
        model.classifier.set_class_names(list(meta.stuff_classes))
    names = model.classifier.class_names[::-1]  # any order of its own classes: columns follow
    rows = torch.randn(3, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    before = classify_rows(model.classifier, rows)
    model.classifier.set_class_names(names)
    torch.testing.assert_close(classify_rows(model.classifier, rows), before.flip(1))


def test_new_names_are_scored_at_test_time():
    cfg = semantic_cfg()
    model = build_model(cfg).eval()
    class_set = zsi_d2.set_vocabulary(model, ["red circle", "purple cross", "light wavy ground"], cfg)
    batch, records = _batch(cfg, VAL, n=1, is_train=False)
    with torch.no_grad():
        sem = model(batch)[0]["sem_seg"]
    assert sem.shape == (3, records[0]["height"], records[0]["width"]) and class_set.unseen


def test_gamma_chosen_on_held_out_pixels_matches_ordinary_inference():
    """The pixel path of the calibration search: each gamma's share of held-out (seen) pixels labelled
    unseen is what the model's own calibrated inference labels them, on the same pixels."""
    import numpy as np

    from zsi_d2.engine.calibration import PIXEL_STRIDE, choose_calibration
    from zsi_d2.evaluation.semantic import load_label_png
    from zsi_d2.modeling.calibration import set_calibration_gamma

    calib = "zs_shapes_tiny_calib_panoptic"
    cfg = semantic_cfg("MODEL.ZERO_SHOT.CALIBRATION.DATASETS", f"('{calib}',)",
                       "MODEL.ZERO_SHOT.CALIBRATION.SEARCH_MAX", "0.1", "MODEL.ZERO_SHOT.CALIBRATION.SEARCH_STEP", "0.1")
    torch.manual_seed(0)
    model = build_model(cfg)
    result = choose_calibration(cfg, model)
    meta = MetadataCatalog.get(calib)
    unseen = torch.tensor([n in meta.unseen_classes for n in meta.stuff_classes])
    batch, records = _batch(cfg, calib, n=len(DatasetCatalog.get(calib)), is_train=False)
    model.eval()
    for gamma, share in result["shares"].items():
        set_calibration_gamma(model, float(gamma))
        wrong = total = 0
        with torch.no_grad(), use_class_set(model, calib, mode="gzsi"):
            for x, d in zip(batch, records):
                pred = model([x])[0]["sem_seg"].argmax(0).flatten()
                labelled = torch.as_tensor(load_label_png(d["sem_seg_file_name"]) != 255).flatten()
                pred = pred[labelled][::PIXEL_STRIDE]
                wrong, total = wrong + int(unseen[pred].sum()), total + len(pred)
        assert np.isclose(share, wrong / total), (gamma, share, wrong / total)
    assert result["gamma"] in (0.0, 0.1) and len(result["shares"]) == 2
