"""The detectron2 way of predicting: a built model scores the config's test set in eval mode, and
`zsi_d2.set_vocabulary` makes it score any names."""
import logging
import math

import pytest
import torch

from conftest import TINY_MASK_FORMER_OPTS, tiny_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.evaluation.evaluator import inference_context
from detectron2.modeling import build_model

import zsi_d2
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.embeddings import MissingEmbeddingError, build_class_embeddings
from zsi_d2.errors import InputKeyError, InputValueError
from zsi_d2.modeling import ClassSet, apply_class_set, use_class_set
from zsi_d2.modeling.vocabulary import class_set_metadata, vocabulary_class_set

MASK_FORMER = "configs/mask_former/zs_shapes/mask_former_embedding.yaml"
PADING_STAGE1 = "configs/pading/zs_shapes/pading_stage1.yaml"
VAL_PANOPTIC = "zs_shapes_tiny_val_panoptic"
PADING_STAGE2 = ["MODEL.META_ARCHITECTURE", "PADing", "MODEL.MASK_FORMER.CLASSIFIER", "linear",
                 "MODEL.PADING.CLASSIFIER", "reference", "MODEL.PADING.NUM_PRIMITIVES", "16",
                 "MODEL.PADING.GENERATOR_DIM_FEEDFORWARD", "64", "MODEL.PADING.GENERATOR_HEADS", "4"]


def mask_former_cfg(*opts, config=MASK_FORMER):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list([*TINY_MASK_FORMER_OPTS, *opts])
    return cfg


MODELS = {
    "projection R-CNN": lambda: tiny_cfg(),
    "ZSI": lambda: tiny_cfg(config="configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"),
    "mask-former core": lambda: mask_former_cfg(),
    "PADing": lambda: mask_former_cfg(*PADING_STAGE2),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_built_model_scores_the_test_set_in_eval_mode(name, caplog):
    """Built and put in eval mode (what DefaultPredictor does), every meta-architecture scores the
    first test set's seen + unseen classes, and says so in one line; training mode: the training set."""
    cfg = MODELS[name]()
    model = build_model(cfg)
    assert model.class_set.mode == "train"  # built in training mode: as before
    with caplog.at_level(logging.INFO, logger="zsi_d2"):
        model.eval()
        model.train()
        model.eval()
    test = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(test)
    kind = model.class_kind
    expected = [n for n in getattr(meta, f"{kind}_classes" if kind != "auto" else "stuff_classes")
                if n in set(meta.seen_classes) | set(meta.unseen_classes)]
    assert model.class_set.mode == "gzsi" and list(model.class_set.names) == expected
    assert set(meta.unseen_classes) & set(model.class_set.names)
    lines = [r.getMessage() for r in caplog.records if "in eval mode scores" in r.getMessage()]
    assert len(lines) == 1 and f"'{test}'" in lines[0], lines
    model.train()
    assert model.class_set.mode == "train" and set(model.class_set.names) == set(meta.seen_classes) & set(expected)


def test_detectron2_default_predictor_can_name_unseen_classes():
    """A new user's first try: detectron2's DefaultPredictor on a mask-former config scores the unseen
    classes too (it used to score the seen ones only), in the test set's label space."""
    cfg = mask_former_cfg()
    predictor = DefaultPredictor(cfg)
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    assert set(meta.unseen_classes) <= set(predictor.model.classifier.class_names)
    image = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = predictor(image.numpy())
    assert out["sem_seg"].shape[0] == len(meta.stuff_classes)


def test_a_closed_set_classifier_scores_its_training_classes_in_eval_mode(caplog):
    """PADing's stage 1 (a linear classifier over the seen classes) cannot score the test set's
    unseen classes: in eval mode it keeps its training set, and the log line says why."""
    cfg = mask_former_cfg(config=PADING_STAGE1)
    model = build_model(cfg)
    with caplog.at_level(logging.INFO, logger="zsi_d2"):
        model.eval()
    assert model.class_set is model.training_class_set
    assert any("cannot score" in r.getMessage() for r in caplog.records)


def test_chosen_class_sets_survive_train_and_eval_switches():
    """The evaluation and calibration paths: a class set chosen with use_class_set stays through
    model.eval() / model.train() (inference_context), and training mode gets the training set back."""
    model = build_model(tiny_cfg())
    model.train()
    with use_class_set(model, "zs_shapes_tiny_val_zsi") as chosen:
        with inference_context(model):
            assert model.class_set is chosen
        assert model.training and model.class_set is chosen
    assert model.class_set is model.training_class_set
    with inference_context(model), use_class_set(model, "zs_shapes_tiny_val_zsi") as chosen:
        assert model.class_set is chosen
    assert model.training and model.class_set is model.training_class_set


def test_a_refused_class_set_leaves_the_model_as_it_was():
    """A class set one module refuses (here: a name the class embeddings lack) is rolled back in
    the modules that took it already (the R-CNN's ROI heads count the classes first)."""
    model = build_model(tiny_cfg())
    before, num_classes = model.class_set, model.roi_heads.num_classes
    names = model.class_set.names[:2] + ("no such class",)
    with pytest.raises(InputKeyError, match="no such class"):
        apply_class_set(model, ClassSet(names, names))
    assert model.class_set is before and model.roi_heads.num_classes == num_classes


# ---- the vocabulary's identity rules, without a model ----------------------------------------------
TV = "tv, television"  # a training class named with two spellings
TRAINED = ClassSet(("red square", TV, "grass"), ("red square", TV, "grass"), "train", stuff=("grass",))
TEST = ClassSet(("red square", TV, "grass", "dark ground"), ("red square", TV, "grass", "dark ground"),
                unseen=("dark ground",), stuff=("grass", "dark ground"))


def test_training_classes_keep_their_identity_and_new_names_are_unseen():
    cs = vocabulary_class_set(["Television", "orange hexagon", "dark ground", "sky", "grass"], TRAINED,
                              known=TEST, stuff=["sky"])
    assert cs.names == (TV, "orange hexagon", "dark ground", "sky", "grass")
    assert cs.unseen == ("orange hexagon", "dark ground", "sky") and cs.mode == "gzsi"
    assert cs.stuff == ("dark ground", "sky", "grass")  # known classes keep their kind, new names as listed
    assert cs.thing_classes == (TV, "orange hexagon")
    meta = class_set_metadata(cs)
    assert meta.stuff_classes == list(cs.names) and meta.seen_classes == [TV, "grass"]
    things = vocabulary_class_set(["sky", "tv"], TRAINED, known=TEST, stuff=["sky"], things_only=True)
    assert things.stuff == () and things.thing_classes == ("sky", TV)


@pytest.mark.parametrize("names, message", [
    (["tv", "television"], "'tv' and 'television' are both the training class 'tv, television'"),
    (["tv", "telly, TV"], "'tv' and 'telly, TV' both name 'tv'"),
    (["orange thing, telly", "telly"], "both name 'telly'"),
    (["tv, red square"], "names the training classes ['red square', 'tv, television']"),
    (["orange hexagon", "orange hexagon"], "'orange hexagon' is given twice"),
    ([], "Empty vocabulary"),
    (["  "], "Empty vocabulary"),
])
def test_one_class_named_twice_is_an_error_naming_both(names, message):
    with pytest.raises(InputValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        vocabulary_class_set(names, TRAINED, known=TEST)


def test_stuff_names_must_be_vocabulary_entries():
    with pytest.raises(InputValueError, match=r"Stuff names \['sky'\] are not in the vocabulary"):
        vocabulary_class_set(["tv"], TRAINED, stuff=["sky"])


# ---- set_vocabulary on a built model --------------------------------------------------------------
@pytest.fixture(scope="module")
def mask_former():
    torch.manual_seed(0)
    cfg = mask_former_cfg()
    model = build_model(cfg).eval()
    image = DatasetCatalog.get(VAL_PANOPTIC)[0]["file_name"]
    from detectron2.data.detection_utils import read_image

    rgb = torch.as_tensor(read_image(image, format="RGB").astype("float32")).permute(2, 0, 1)
    return cfg, model, [{"image": rgb, "height": rgb.shape[1], "width": rgb.shape[2]}]


LOSERS = ("purple circle", "white cross")  # names of the split's distractors: never trained, never labelled


def _make_losers_lose(cfg, model, scale=50.0):
    """Every query's projection points away from the losers' attribute words and towards every
    other word, so that their logits are the lowest by far (a model on which they never win)."""
    classifier = model.classifier.classifier
    bank = classifier.classes
    words = torch.ones(bank.dim)
    losing = build_class_embeddings(cfg, list(LOSERS)).sum(0) > 0
    words[losing] = -1.0
    with torch.no_grad():
        classifier.project.bias.copy_(10.0 * words)
        classifier.log_logit_scale.fill_(math.log(scale))


def _by_name(output, cs):
    """A model output keyed by class name: semantic channels, panoptic segments, instances."""
    names = cs.names
    sem = {n: output["sem_seg"][i] for i, n in enumerate(names)}
    seg, info = output["panoptic_seg"]
    panoptic = (seg, [(s["id"], names[s["category_id"]], s["isthing"]) for s in info])
    inst = output["instances"]
    instances = ([cs.thing_classes[c] for c in inst.pred_classes.tolist()], inst.scores, inst.pred_masks)
    return sem, panoptic, instances


def test_names_that_never_win_leave_the_other_predictions_unchanged(mask_former):
    """The test set's classes in reverse order, then two new names on which the model never wins:
    every prediction (semantic scores, panoptic segments, instances) is the default class set's, by
    class name; the new names' channels stay empty."""
    cfg, model, inputs = mask_former
    _make_losers_lose(cfg, model)
    with torch.no_grad():
        default = model.class_set
        before = _by_name(model(inputs)[0], default)
        cs = zsi_d2.set_vocabulary(model, list(reversed(default.names)) + list(LOSERS), cfg)
        after = _by_name(model(inputs)[0], cs)
    assert cs.unseen[-2:] == LOSERS and cs.names[:-2] == tuple(reversed(default.names))
    for name, channel in before[0].items():
        torch.testing.assert_close(after[0][name], channel, rtol=1e-4, atol=1e-6)
    assert all(float(after[0][n].max()) < 1e-6 for n in LOSERS)
    assert torch.equal(after[1][0], before[1][0]) and after[1][1] == before[1][1]
    assert after[2][0] == before[2][0] and before[2][0], "no instances: the comparison would be vacuous"
    torch.testing.assert_close(after[2][1], before[2][1], rtol=1e-4, atol=1e-7)
    assert torch.equal(after[2][2], before[2][2])


def test_new_names_are_embedded_by_the_configured_source_and_calibrated_as_unseen(mask_former):
    cfg, model, _ = mask_former
    cs = zsi_d2.set_vocabulary(model, ["red square", "purple circle", "white cross, white star"], cfg)
    bank = model.classifier.classifier.classes
    # in the model's space: its split's attribute words (the names alone would make another vocabulary)
    expected = build_class_embeddings(cfg, cs.names, split_for=model.training_class_set.names)
    torch.testing.assert_close(bank.weights()[:-1], expected)
    assert model.classifier.class_names == cs.names
    # calibrated stacking lowers the training class only (the no-object column is never lowered)
    assert model.classifier.calibration_seen.tolist() == [True, False, False, False]


def test_a_name_without_an_embedding_is_one_line_and_changes_nothing(mask_former):
    cfg, model, _ = mask_former
    before = model.class_set
    with pytest.raises(MissingEmbeddingError, match="source 'attributes'.*'orange hexagon'") as info:
        zsi_d2.set_vocabulary(model, ["red square", "orange hexagon"], cfg)
    assert "\n" not in str(info.value)
    assert model.class_set is before


def test_a_closed_set_classifier_refuses_new_names_in_one_line():
    cfg = mask_former_cfg(config=PADING_STAGE1)
    model = build_model(cfg).eval()
    before = model.class_set
    with pytest.raises(InputValueError, match="cannot score.*purple circle"):
        zsi_d2.set_vocabulary(model, ["red square", "purple circle"], cfg)
    assert model.class_set is before
