"""PADing stage 2 on tiny zs_shapes: the stage-1 checkpoint check (architecture, classes, classifier
kind), the three classifiers' starting functions, the two-step trainer (only the generator side and
the classifier learn; the classifier's gradients are its own), the loss terms each ablation
switches, and the query bank (cache key, calibration off, images without targets left out)."""
import numpy as np
import pytest
import torch

import zsi_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.engine import GenerativeTrainer, ZeroShotCheckpointer
from zsi_d2.errors import CheckpointMismatchError, InputValueError
from zsi_d2.methods.pading import check_stage1_checkpoint
from zsi_d2.engine.feature_bank_cache import bank_cache_key
from zsi_d2.methods.pading.feature_bank import compute_query_bank, load_or_compute_query_bank
from zsi_d2.modeling.class_set import apply_class_set, use_class_set

from test_mask_former_model import TRAIN, tiny_mask_former_cfg

STAGE2 = ["MODEL.META_ARCHITECTURE", "PADing", "SOLVER.OPTIMIZER", "ADAM", "SOLVER.BASE_LR", "0.0005",
          "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.CLIP_GRADIENTS.ENABLED", "False", "MODEL.PADING.NUM_PRIMITIVES", "16",
          "MODEL.PADING.GENERATOR_DIM_FEEDFORWARD", "64", "MODEL.PADING.GENERATOR_HEADS", "4",
          "MODEL.PADING.IMAGES_PER_BATCH", "2", "MODEL.PADING.STRUCTURE_WEIGHT", "1.0", "DATASETS.TEST", "()"]
STAGE1_OF = {"reference": "linear", "free_prototypes": "embedding", "shared_projection": "embedding"}
SEGMENTER = ("backbone.", "pixel_decoder.", "transformer_decoder.")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Stage-1 checkpoints of the tiny core, one per classifier kind (untrained, the linear one with
    random rows and biases: only shapes, class set and the rows' values matter)."""
    folder = tmp_path_factory.mktemp("stage1")
    paths = {}
    for kind in ("linear", "embedding"):
        cfg = tiny_mask_former_cfg("MODEL.MASK_FORMER.CLASSIFIER", kind)
        torch.manual_seed(0)
        model = build_model(cfg)
        if kind == "linear":
            torch.nn.init.normal_(model.classifier.linear.bias)
        ZeroShotCheckpointer.from_config(cfg, model, str(folder), purpose="train").save(f"stage1_{kind}")
        paths[kind] = str(folder / f"stage1_{kind}.pth")
    return paths


def _stage2_cfg(stage1, tmp_path, classifier="reference", *opts):
    kind = STAGE1_OF[classifier]
    return tiny_mask_former_cfg(*STAGE2, "MODEL.WEIGHTS", stage1[kind], "OUTPUT_DIR", str(tmp_path),
                                "MODEL.MASK_FORMER.CLASSIFIER", kind, "MODEL.PADING.CLASSIFIER", classifier, *opts)


def _stage2(stage1, tmp_path, classifier="reference", *opts):
    cfg = _stage2_cfg(stage1, tmp_path, classifier, *opts)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="train").resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return cfg, model


def _trainer(stage1, tmp_path, classifier="reference", *opts):
    cfg = _stage2_cfg(stage1, tmp_path, classifier, *opts)
    trainer = GenerativeTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def test_stage2_needs_a_matching_stage1_checkpoint(stage1, tmp_path):
    cfg, model = _stage2(stage1, tmp_path)
    check_stage1_checkpoint(cfg, model)  # the right one passes
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(InputValueError, match="MODEL.WEIGHTS is empty"):
        check_stage1_checkpoint(cfg, model)
    other_cfg = tiny_mask_former_cfg("MODEL.MASK_FORMER.HIDDEN_DIM", "64", "MODEL.MASK_FORMER.CLASSIFIER", "linear")
    ZeroShotCheckpointer.from_config(other_cfg, build_model(other_cfg), str(tmp_path), purpose="train").save("other")
    cfg.MODEL.WEIGHTS = str(tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="not a stage-1 checkpoint of this architecture"):
        check_stage1_checkpoint(cfg, model)
    state = torch.load(stage1["linear"], map_location="cpu")
    state["zsi_d2"]["trained_classes"] = state["zsi_d2"]["trained_classes"][:-1]
    torch.save(state, tmp_path / "fewer.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "fewer.pth")
    with pytest.raises(CheckpointMismatchError, match="not this config's seen classes"):
        check_stage1_checkpoint(cfg, model)


@pytest.mark.parametrize("classifier,checkpoint", [("reference", "embedding"), ("free_prototypes", "linear"),
                                                   ("shared_projection", "linear")])
def test_a_stage1_of_the_other_classifier_kind_is_one_line(stage1, tmp_path, classifier, checkpoint):
    cfg, model = _stage2(stage1, tmp_path / "ok", classifier)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = stage1[checkpoint]
    with pytest.raises(CheckpointMismatchError, match=f"is a stage 1 with the '{checkpoint}' classifier") as e:
        check_stage1_checkpoint(cfg, model)
    assert "MODEL.MASK_FORMER.CLASSIFIER" in str(e.value) and "\n" not in str(e.value)


def test_a_classifier_the_stage1_kind_cannot_start_is_refused_at_build(stage1, tmp_path):
    cfg = _stage2_cfg(stage1, tmp_path, "reference", "MODEL.MASK_FORMER.CLASSIFIER", "embedding")
    with pytest.raises(InputValueError, match="set MODEL.MASK_FORMER.CLASSIFIER 'linear'"):
        build_model(cfg)


def test_a_training_set_without_unseen_names_is_refused(stage1, tmp_path):
    name = "zs_shapes_tiny_train_panoptic_no_unseen"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(TRAIN))
        meta = MetadataCatalog.get(TRAIN).as_dict()
        meta.pop("name")
        MetadataCatalog.get(name).set(**dict(meta, unseen_classes=[]))
    cfg = _stage2_cfg(stage1, tmp_path, "reference", "DATASETS.TRAIN", f"('{name}',)")
    with pytest.raises(InputValueError, match="unseen_classes"):
        build_model(cfg)


def test_fewer_images_per_step_than_processes_is_one_line(stage1, tmp_path):
    with pytest.raises(InputValueError, match="IMAGES_PER_BATCH=0 must be at least the number of processes"):
        _trainer(stage1, tmp_path, "reference", "MODEL.PADING.IMAGES_PER_BATCH", "0")


def _logits_by_name(classifier, queries):
    """{class name: logits column} of a query classifier over its active names (+ '' = no object)."""
    logits = classifier(queries)
    return {n: logits[..., i] for i, n in enumerate(list(classifier.class_names) + [""])}


@pytest.mark.parametrize("classifier", ["reference", "free_prototypes", "shared_projection"])
def test_stage2_classifier_starts_from_stage1s_function(stage1, tmp_path, classifier):
    """Loaded from stage 1, every classifier gives stage 1's seen and no-object logits exactly; the
    reference's unseen rows are zero, the others' unseen columns are stage 1's name-based scores."""
    cfg, model = _stage2(stage1, tmp_path, classifier)
    stage1_cfg = tiny_mask_former_cfg("MODEL.MASK_FORMER.CLASSIFIER", STAGE1_OF[classifier])
    first = build_model(stage1_cfg)
    ZeroShotCheckpointer.from_config(stage1_cfg, first, purpose="eval").load(cfg.MODEL.WEIGHTS)
    model.eval(), first.eval()
    queries = torch.randn(2, 5, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    apply_class_set(model, model.stage2_class_set)
    after = _logits_by_name(model.classifier, queries)
    if classifier != "reference":
        apply_class_set(first, model.stage2_class_set)  # the embedding head scores unseen names too
    before = _logits_by_name(first.classifier, queries)
    assert set(before) <= set(after) and len(before) > len(model.stage2_class_set.unseen)
    for name, column in before.items():  # free prototypes: re-normalised unit vectors, equal to rounding
        same = torch.equal if classifier != "free_prototypes" else lambda a, b: torch.allclose(a, b, atol=1e-5)
        assert same(after[name], column), name
    if classifier == "reference":
        for name in model.stage2_class_set.unseen:
            assert torch.equal(after[name], torch.zeros_like(after[name])), name


def test_reference_classifier_step_moves_unseen_rows_and_not_the_segmenter(stage1, tmp_path):
    torch.manual_seed(0)
    trainer = _trainer(stage1, tmp_path)
    model = trainer.model
    unseen_rows = torch.tensor([model.classifier.trained_names.index(n) for n in model.stage2_class_set.unseen])
    assert torch.equal(model.classifier.linear.weight[unseen_rows], torch.zeros(len(unseen_rows), 32))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(SEGMENTER)}
    generator = {k: v.clone() for k, v in model.generative_criterion.state_dict().items()}
    generator_side = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    classifier_side = {id(p) for g in trainer.classifier_optimizer.param_groups for p in g["params"]}
    assert generator_side == {id(p) for p in model.generative_criterion.parameters()} and generator_side
    assert classifier_side == {id(p) for p in model.classifier.parameters()} and classifier_side
    with EventStorage(0):
        trainer.run_step()
    assert (model.classifier.linear.weight[unseen_rows].abs().sum(1) > 0).all()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(SEGMENTER))
    assert any(not torch.equal(model.generative_criterion.state_dict()[k], v) for k, v in generator.items())
    assert set(model.class_set.names) == set(model.stage2_class_set.names)


def test_classifier_step_uses_its_own_gradients_only(stage1, tmp_path):
    """The generator step's class loss also reaches the classifier; the classifier step must drop it."""
    trainer = _trainer(stage1, tmp_path, "reference", "MODEL.PADING.NUM_CHOOSE", "0")
    model = trainer.model
    features = trainer.bank.features[:2].flatten(0, 1)
    labels = trainer.bank_labels[:2].flatten()
    matched = labels < len(model.stage2_class_set.names)
    params = model.classifier_parameters()
    expected = torch.autograd.grad(sum(model.classifier_losses(features, labels).values()), params)
    seen_at_step = []
    step = trainer.classifier_optimizer.step
    trainer.classifier_optimizer.step = lambda: (seen_at_step.append([p.grad.clone() for p in params]), step())
    trainer.generator_step(features[matched], labels[matched])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)  # the generator's CE got there
    trainer.classifier_step(features, labels)
    for got, want in zip(seen_at_step[0], expected):
        assert torch.allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("opts,expected", [
    (["MODEL.PADING.GENERATOR", "gmmn", "MODEL.PADING.ALIGNMENT_WEIGHT", "0.0", "MODEL.PADING.RELATION_WEIGHT", "0.0",
      "MODEL.PADING.DISENTANGLE", "False"], {"loss_mmd", "loss_generator_ce"}),
    (["MODEL.PADING.DISENTANGLE", "False"], {"loss_mmd", "loss_generator_ce", "loss_alignment", "loss_relation"}),
    ([], {"loss_mmd", "loss_generator_ce", "loss_alignment", "loss_relation", "loss_reconstruction",
          "loss_unrelated"}),
])
def test_each_ablation_is_a_config_change(stage1, tmp_path, opts, expected):
    cfg, model = _stage2(stage1, tmp_path, "reference", *opts)
    model.train()
    class_set = model.stage2_class_set
    apply_class_set(model, class_set)
    seen, _ = class_set.group_indices
    real = torch.randn(6, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    labels = seen[torch.tensor([0, 1, 2, 0, 1, 2])]
    losses = model.generator_losses(real, labels)
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    assert (cfg.MODEL.PADING.GENERATOR == "gmmn") == (type(model.generative_criterion.generator).__name__ ==
                                                      "GMMNGenerator")
    classifier = model.classifier_losses(real, torch.cat([labels[:3], torch.full((3,), len(class_set.names))]))
    assert set(classifier) == {"loss_classifier_ce"}


def test_panoptic_mapper_refuses_a_dataset_without_panoptic_annotations():
    cfg = tiny_mask_former_cfg("DATASETS.TRAIN", "('zs_shapes_tiny_train',)")
    with pytest.raises(InputValueError, match="zs_shapes_tiny_train_panoptic"):
        build_dataset_mapper(cfg, is_train=True)
    assert TRAIN.endswith("_panoptic")


def test_query_bank_in_batches_equals_one_image_at_a_time(stage1, tmp_path):
    """Batching the frozen segmenter's forward (zs_shapes images share one size, so no padding
    differs) changes neither the embeddings nor which image each row belongs to."""
    cfg, model = _stage2(stage1, tmp_path)
    dicts = DatasetCatalog.get(TRAIN)[:5]
    with use_class_set(model, TRAIN):
        np.random.seed(0)  # the training mapper's random flips
        one = compute_query_bank(cfg, model, dicts, batch_size=1)
        np.random.seed(0)
        three = compute_query_bank(cfg, model, dicts, batch_size=3)  # 3 + 2: a short last batch
    assert one.features.shape == three.features.shape == (5, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
                                                          cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    assert torch.allclose(one.features, three.features, atol=1e-4)
    mapper = build_dataset_mapper(cfg, is_train=True)
    targets = torch.tensor([min(len(mapper(d)["instances"]), cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES) for d in dicts])
    assert ((one.labels >= 0).sum(1) == targets).all() and ((three.labels >= 0).sum(1) == targets).all()


def test_query_bank_leaves_out_images_without_targets_and_ignores_calibration(stage1, tmp_path):
    cfg, model = _stage2(stage1, tmp_path)
    dicts = [dict(d) for d in DatasetCatalog.get(TRAIN)[:3]]
    dicts[1]["segments_info"] = []  # an image with nothing annotated
    with use_class_set(model, TRAIN):
        np.random.seed(0), torch.manual_seed(0)  # the mapper's flips, the matcher's points
        plain = compute_query_bank(cfg, model, dicts)
        from zsi_d2.modeling.calibration import set_calibration_gamma

        set_calibration_gamma(model, 100.0)  # a test-time setting: must not change the training features
        np.random.seed(0), torch.manual_seed(0)
        calibrated = compute_query_bank(cfg, model, dicts)
        assert model.classifier.calibration_gamma == 100.0  # left as configured
        set_calibration_gamma(model, 0.0)
    assert len(plain) == 2
    assert torch.equal(plain.labels, calibrated.labels) and torch.equal(plain.features, calibrated.features)


PADING_KEYS = ("PADING",)


def test_query_bank_cache_key_follows_checkpoint_bytes_and_class_set(stage1, tmp_path):
    cfg, model = _stage2(stage1, tmp_path)
    dicts = DatasetCatalog.get(TRAIN)
    names = model.stage2_class_set.names
    key = bank_cache_key(cfg, stage1["linear"], [TRAIN], dicts, names, PADING_KEYS)
    state = torch.load(stage1["linear"], map_location="cpu")
    state["model"]["backbone.stem.0.weight" if "backbone.stem.0.weight" in state["model"] else
                   next(iter(state["model"]))].add_(1e-3)
    torch.save(state, tmp_path / "changed.pth")
    assert bank_cache_key(cfg, str(tmp_path / "changed.pth"), [TRAIN], dicts, names, PADING_KEYS) != key
    assert bank_cache_key(cfg, stage1["linear"], [TRAIN], dicts, names[:-1], PADING_KEYS) != key
    assert bank_cache_key(cfg, stage1["linear"], [TRAIN], dicts[:-1], names, PADING_KEYS) != key
    stage2_only = _stage2_cfg(stage1, tmp_path, "reference", "MODEL.PADING.UNSEEN_CLASS_WEIGHT", "1.0",
                              "MODEL.ZERO_SHOT.CALIBRATION.GAMMA", "2.0")
    assert bank_cache_key(stage2_only, stage1["linear"], [TRAIN], dicts, names, PADING_KEYS) == key


def test_query_bank_is_cached_and_reused(stage1, tmp_path):
    cfg, model = _stage2(stage1, tmp_path)
    first = load_or_compute_query_bank(cfg, model, cfg.MODEL.WEIGHTS)
    files = list((tmp_path / "feature_bank").iterdir())
    assert len(files) == 1
    calls = []
    import zsi_d2.methods.pading.feature_bank as module

    original = module.compute_query_bank
    module.compute_query_bank = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        again = load_or_compute_query_bank(cfg, model, cfg.MODEL.WEIGHTS)
    finally:
        module.compute_query_bank = original
    assert not calls and torch.equal(first.features, again.features)
    assert set(first.names) == set(model.stage2_class_set.names) - set(model.stage2_class_set.unseen)


def test_free_prototypes_score_names_outside_the_training_config_by_their_embedding(stage1, tmp_path):
    from zsi_d2.modeling.mask_former.query_classifier import FreePrototypeQueryClassifier

    cfg, model = _stage2(stage1, tmp_path, "shared_projection")
    head = model.classifier.classifier
    names = model.stage2_class_set.names
    free = FreePrototypeQueryClassifier(head, names[1:])  # names[0] has no prototype
    with torch.no_grad():
        free.prototypes.add_(torch.randn_like(free.prototypes))  # trained away from the names
    free.set_class_names(names)
    model.classifier.set_class_names(names)
    queries = torch.randn(3, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    ours, plain = free(queries), model.classifier(queries)
    assert torch.allclose(ours[:, 0], plain[:, 0], atol=1e-6)  # scored by its name embedding
    assert torch.allclose(ours[:, -1], plain[:, -1], atol=1e-6)  # the same no object
    assert not torch.allclose(ours[:, 1], plain[:, 1], atol=1e-3)  # a free prototype


def test_a_stage2_class_set_without_unseen_classes_is_one_line():
    """GenerativeStage.init_generative_stage, shared by PADing and the pixel second stage: nothing to
    generate is refused before any training."""
    import torch
    from torch import nn

    from zsi_d2.errors import InputValueError
    from zsi_d2.modeling import ClassSet
    from zsi_d2.modeling.generative import GenerativeStage

    class Stage(GenerativeStage, nn.Module):
        def __init__(self, class_set):
            super().__init__()
            self.backbone = nn.Linear(2, 2)
            self.init_generative_stage(nn.Linear(2, 2), class_set, torch.zeros(len(class_set.names), 2),
                                       [self.backbone], "PADing stage 2")

    names = ("red square", "blue circle")
    with pytest.raises(InputValueError, match=r"PADing stage 2 generates features of unseen classes, but .* has none"):
        Stage(ClassSet(names, names))
    stage = Stage(ClassSet(names, names, unseen=("blue circle",)))
    assert not any(p.requires_grad for p in stage.backbone.parameters())
    assert stage._unseen.tolist() == [1] and stage.generator_parameters()
