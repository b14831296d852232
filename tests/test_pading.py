"""PADing stage 2 on tiny zs_shapes: the stage-1 checkpoint check, the two-step trainer (only the
generator side and the classifier learn), the loss terms each ablation switches, the query bank
cache, and the leakage-free class sets."""
import os

import pytest
import torch

import zsi_d2  # noqa: F401
from detectron2.modeling import build_model

from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.engine import ZeroShotCheckpointer, build_optimizer
from zsi_d2.errors import CheckpointMismatchError, InputValueError
from zsi_d2.methods.pading import PADingStage2Trainer, check_stage1_checkpoint
from zsi_d2.methods.pading.feature_bank import load_or_compute_query_bank

from test_mask_former_model import TRAIN, tiny_mask_former_cfg

STAGE2 = ["MODEL.META_ARCHITECTURE", "PADing", "SOLVER.OPTIMIZER", "ADAM", "SOLVER.BASE_LR", "0.0005",
          "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.CLIP_GRADIENTS.ENABLED", "False", "MODEL.PADING.NUM_PRIMITIVES", "16",
          "MODEL.PADING.GENERATOR_DIM_FEEDFORWARD", "64", "MODEL.PADING.GENERATOR_HEADS", "4",
          "MODEL.PADING.IMAGES_PER_BATCH", "2", "MODEL.PADING.STRUCTURE_WEIGHT", "1.0"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A stage-1 checkpoint of the tiny core (untrained weights: only its shapes and class set matter)."""
    folder = tmp_path_factory.mktemp("stage1")
    cfg = tiny_mask_former_cfg("DATASETS.TRAIN", "('zs_shapes_tiny_train_panoptic',)")
    torch.manual_seed(0)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, str(folder), purpose="train").save("model_final")
    return str(folder / "model_final.pth")


def _stage2(stage1, tmp_path, *opts):
    cfg = tiny_mask_former_cfg(*STAGE2, "MODEL.WEIGHTS", stage1, "OUTPUT_DIR", str(tmp_path), *opts)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="train").resume_or_load(stage1, resume=False)
    return cfg, model


def test_stage2_needs_a_matching_stage1_checkpoint(stage1, tmp_path):
    cfg, model = _stage2(stage1, tmp_path)
    check_stage1_checkpoint(cfg, model)  # the right one passes
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(InputValueError, match="MODEL.WEIGHTS is empty"):
        check_stage1_checkpoint(cfg, model)
    other_cfg = tiny_mask_former_cfg("MODEL.MASK_FORMER.HIDDEN_DIM", "64")  # another architecture
    other = tmp_path / "other.pth"
    ZeroShotCheckpointer.from_config(other_cfg, build_model(other_cfg), str(tmp_path), purpose="train").save("other")
    cfg.MODEL.WEIGHTS = str(other)
    with pytest.raises(CheckpointMismatchError, match="not a stage-1 checkpoint of this architecture"):
        check_stage1_checkpoint(cfg, model)
    state = torch.load(stage1, map_location="cpu")
    state["zsi_d2"]["trained_classes"] = state["zsi_d2"]["trained_classes"][:-1]
    torch.save(state, tmp_path / "fewer.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "fewer.pth")
    with pytest.raises(CheckpointMismatchError, match="not this config's seen classes"):
        check_stage1_checkpoint(cfg, model)


def test_stage2_steps_train_only_the_generator_side_and_the_classifier(stage1, tmp_path):
    torch.manual_seed(0)
    cfg, model = _stage2(stage1, tmp_path)
    model.train()
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("backbone.", "pixel_decoder.", "transformer_decoder."))}
    generator = {k: v.clone() for k, v in model.generator.state_dict().items()}
    classifier = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    trainer = PADingStage2Trainer(cfg, model, build_optimizer(cfg, model))
    # Each optimiser holds its own side only; the segmenter has nothing to optimise.
    generator_side = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    classifier_side = {id(p) for g in trainer.classifier_optimizer.param_groups for p in g["params"]}
    assert generator_side == {id(p) for p in model.generator_parameters()} and generator_side
    assert classifier_side == {id(p) for p in model.classifier.parameters() if p.requires_grad} and classifier_side
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith(("backbone.", "pixel_decoder.", "transformer_decoder.")))
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        for _ in range(2):
            trainer.run_step()
    assert set(model.class_set.unseen) and set(model.class_set.names) == set(model.stage2_class_set.names)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    frozen_params = [p for n, p in model.named_parameters() if n.startswith(("backbone.", "pixel_decoder."))]
    assert all(p.grad is None for p in frozen_params)
    assert any(not torch.equal(model.generator.state_dict()[k], v) for k, v in generator.items())
    assert any(not torch.equal(model.classifier.state_dict()[k], v) for k, v in classifier.items())
    # The query bank was cached under OUTPUT_DIR/feature_bank and is reused, not recomputed.
    cached = os.listdir(tmp_path / "feature_bank")
    assert len(cached) == 1
    bank = load_or_compute_query_bank(cfg, model, cfg.MODEL.WEIGHTS)
    assert torch.equal(bank.queries, trainer.bank.queries) and (bank.labels >= 0).any()
    assert set(bank.names) == set(model.stage2_class_set.names) - set(model.stage2_class_set.unseen)


@pytest.mark.parametrize("opts,expected", [
    (["MODEL.PADING.GENERATOR", "gmmn", "MODEL.PADING.ALIGNMENT_WEIGHT", "0.0", "MODEL.PADING.RELATION_WEIGHT", "0.0",
      "MODEL.PADING.DISENTANGLE", "False"], {"loss_mmd", "loss_generator_ce"}),
    (["MODEL.PADING.DISENTANGLE", "False"], {"loss_mmd", "loss_generator_ce", "loss_alignment", "loss_relation"}),
    ([], {"loss_mmd", "loss_generator_ce", "loss_alignment", "loss_relation", "loss_reconstruction",
          "loss_unrelated"}),
])
def test_each_ablation_is_a_config_change(stage1, tmp_path, opts, expected):
    cfg, model = _stage2(stage1, tmp_path, *opts)
    model.train()
    class_set = model.stage2_class_set
    from zsi_d2.modeling.class_set import apply_class_set

    apply_class_set(model, class_set)
    seen, _ = class_set.group_indices()
    real = torch.randn(6, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    labels = seen[torch.tensor([0, 1, 2, 0, 1, 2])]
    losses = model.generator_losses(real, labels)
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    assert (cfg.MODEL.PADING.GENERATOR == "gmmn") == (type(model.generator).__name__ == "GMMNGenerator")
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
    from detectron2.data import DatasetCatalog

    from zsi_d2.methods.pading.feature_bank import compute_query_bank
    from zsi_d2.modeling.class_set import use_class_set

    cfg, model = _stage2(stage1, tmp_path)
    dicts = DatasetCatalog.get(TRAIN)[:5]
    import numpy as np

    with use_class_set(model, TRAIN):
        np.random.seed(0)  # the training mapper's random flips
        one = compute_query_bank(cfg, model, dicts, batch_size=1)
        np.random.seed(0)
        three = compute_query_bank(cfg, model, dicts, batch_size=3)  # 3 + 2: a short last batch
    assert one.queries.shape == three.queries.shape == (5, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
                                                        cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
    assert torch.allclose(one.queries, three.queries, atol=1e-4)
    mapper = build_dataset_mapper(cfg, is_train=True)
    targets = torch.tensor([min(len(mapper(d)["instances"]), cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES) for d in dicts])
    assert ((one.labels >= 0).sum(1) == targets).all() and ((three.labels >= 0).sum(1) == targets).all()
