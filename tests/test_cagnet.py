"""projects/CaGNet: the contextual module, the released loss forms, the self-training labels, which
modules each phase trains, and the phases end to end through its train_net.py on zs_shapes tiny."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from conftest import PIXEL_TINY_OPTS as TINY
from conftest import CAGNET_TINY_OPTS, REPO_ROOT, project_train_net, run_in_process
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.errors import InputValueError

PROJECT = os.path.join(REPO_ROOT, "projects", "CaGNet")
sys.path.insert(0, PROJECT)
from cagnet import add_cagnet_config, top_p_pseudo_labels  # noqa: E402
from cagnet.modules import ContextualGenerator, ContextualModule, gan_l1_loss, masked_kl  # noqa: E402
from cagnet.trainer import decay_factor  # noqa: E402

sys.path.remove(PROJECT)
cagnet_train_net = project_train_net("CaGNet")

CONFIGS = os.path.join(PROJECT, "configs", "zs_shapes")
TEST = ["DATASETS.TEST", "('zs_shapes_tiny_val_panoptic',)"]
SMALL = CAGNET_TINY_OPTS


def _cfg(config="cagnet_train.yaml", *opts):
    cfg = get_zsi_d2_cfg()
    add_cagnet_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list([*TINY, *TEST, *SMALL, *opts])
    return cfg


# ---- networks and loss forms, by hand -----------------------------------------------------------
def test_contextual_module_latent_is_mu_at_test():
    torch.manual_seed(0)
    module = ContextualModule(dim=16, hidden=8)
    h = torch.randn(2, 16, 9, 11)
    refined, z, mu, logvar = module(h)
    assert refined.shape == z.shape == h.shape and (logvar >= 0).all() and not torch.equal(z, mu)
    module.eval()
    refined, z, mu, _ = module(h)
    assert torch.equal(z, mu)
    torch.testing.assert_close(refined, torch.sigmoid(h + h * torch.sigmoid(mu)))


def test_context_selector_weights():
    """softmax: the weights over the three scales sum to one at every pixel; sigmoid (as released):
    each weight on its own in [0.5, 1) after the ReLU."""
    torch.manual_seed(0)
    scales = [torch.randn(2, 8, 5, 7) for _ in range(3)]
    softmax = ContextualModule(dim=4, hidden=8, selector="softmax").scale_weights(scales)
    assert softmax.shape == (2, 3, 5, 7)
    torch.testing.assert_close(softmax.sum(dim=1), torch.ones(2, 5, 7))
    released = ContextualModule(dim=4, hidden=8, selector="sigmoid").scale_weights(scales)
    assert (released >= 0.5).all() and (released < 1).all() and not torch.allclose(released.sum(1), torch.ones(2, 5, 7))
    with pytest.raises(InputValueError, match="MODEL.CAGNET.SELECTOR 'max' is not one of"):
        ContextualModule(dim=4, selector="max")


def test_masked_kl_and_l1_gan_loss_by_hand():
    mu = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    valid = torch.tensor([[[True, False]]])
    assert masked_kl(mu, torch.zeros_like(mu), valid).item() == pytest.approx(0.5)  # -0.5 (1 + 0 - 1 - 1)
    assert masked_kl(mu, torch.zeros_like(mu), ~valid).item() == pytest.approx(0.0)
    prob = torch.tensor([0.25, 0.75])
    assert gan_l1_loss(prob, real=True).item() == pytest.approx(0.5)  # |0.25 - 1|, |0.75 - 1|: L1, not squared
    assert gan_l1_loss(prob, real=False).item() == pytest.approx(0.5)


def test_generator_maps_embedding_and_latent_rows_to_a_feature():
    out = ContextualGenerator(embed_dim=6, feature_dim=5, hidden=(7,), dropout=(0.1,))(torch.randn(3, 6), torch.randn(3, 5))
    assert out.shape == (3, 5) and (out > 0).all() and (out < 1).all()


def test_top_p_pseudo_labels_by_hand():
    ignore = 255
    # 4 classes (2 and 3 unseen), 1 image of 1 x 4 pixels; scores rank the classes per pixel
    logits = torch.tensor([[[[9., 9., 0., 9.]], [[8., 0., 9., 0.]], [[0., 8., 8., 8.]], [[7., 0., 0., 0.]]]])
    targets = torch.tensor([[[ignore, ignore, ignore, 1]]])
    inside = torch.ones_like(targets, dtype=torch.bool)
    unseen = torch.tensor([2, 3])
    # top 2 per pixel: {0, 1}, {0, 2}, {1, 2}, {0, 2}; pixel 0 has no unseen class, pixel 3 is labelled
    assert top_p_pseudo_labels(logits, targets, unseen, 2, ignore, inside).tolist() == [[[ignore, 2, 2, 1]]]
    # top 1 (the reference's config): only pixel 0's... none is unseen at rank 1 except none here
    assert top_p_pseudo_labels(logits, targets, unseen, 1, ignore, inside).tolist() == [[[ignore, ignore, ignore, 1]]]
    # top 3: pixel 0 reaches class 3 (rank 3); padding is never labelled
    inside[0, 0, 2] = False
    assert top_p_pseudo_labels(logits, targets, unseen, 3, ignore, inside).tolist() == [[[3, 2, ignore, 1]]]


def test_discriminator_and_generator_decay_as_released():
    assert decay_factor(9999, 10000, 5000, 0.71) == 1.0
    assert decay_factor(10000, 10000, 5000, 0.71) == pytest.approx(0.71)
    assert decay_factor(15000, 10000, 5000, 0.71) == pytest.approx(0.71 ** 2)
    assert decay_factor(10**6, 10000, 0, 0.71) == 1.0


# ---- the model: which loss reaches which module ----------------------------------------------------
def _batch(cfg, n=2):
    mapper = build_dataset_mapper(cfg, is_train=True)
    return [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:n]]


def _reached(loss, model):
    """Names of the parameters `loss` has a non-zero gradient for."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n.split(".")[0] for (n, _), g in zip(named, grads) if g is not None and g.abs().sum() > 0}


@pytest.mark.parametrize("phase", ["train", "finetune"])
def test_each_loss_reaches_only_its_side(phase):
    torch.manual_seed(0)
    cfg = _cfg("cagnet_train.yaml", "MODEL.CAGNET.PHASE", phase, "MODEL.CAGNET.FAKE_CLASS_WEIGHT", "0.25",
               "MODEL.CAGNET.GENERATOR_CLASS_WEIGHT", "1.0")
    model = build_model(cfg).train()
    sides = model.step1_losses(_batch(cfg))
    # The segmenter's CE and the generator's losses pass through the discriminator, which does not step
    # on them (CaGNetTrainer takes each side's gradients for its own parameters only); a discriminator
    # loss never reaches the generator or the segmenter, a generator loss never the segmenter.
    owners = {"segmenter": {"backbone", "head", "contextual", "classifier"}, "discriminator": {"classifier", "real_fake"},
              "generator": {"generator", "classifier", "real_fake"}}
    for side, terms in sides.items():
        for name, loss in terms.items():
            reached = _reached(loss, model)
            assert reached and reached <= owners[side], (side, name, reached)
    assert set(sides["generator"]) == {"loss_g_gan", "loss_mmd", "loss_g_class"}
    if phase == "finetune":  # segmenter and contextual module frozen: no segmenter loss, no parameter to reach
        assert sides["segmenter"] == {}
        assert not any(p.requires_grad for m in (model.backbone, model.head, model.contextual) for p in m.parameters())
        assert not model.backbone.training and model.contextual.training  # frozen statistics; z still sampled
    else:
        assert _reached(sides["segmenter"]["loss_kl"], model) == {"backbone", "head", "contextual"}
    step2 = model.step2_losses(64)
    assert set(step2["discriminator"]) == {"loss_d_transfer_class"} and step2["generator"] == {}
    assert _reached(step2["discriminator"]["loss_d_transfer_class"], model) == {"classifier"}


def test_the_released_untrained_selector_is_in_no_optimiser():
    """MODEL.CAGNET.TRAIN_SELECTOR False: the selector keeps its starting weights (the released code);
    True (the paper's): it trains with the contextual module, at its rate."""
    for train_selector in (True, False):
        cfg = _cfg("cagnet_train.yaml", "MODEL.CAGNET.TRAIN_SELECTOR", str(train_selector))
        model = build_model(cfg).train()
        selector = {id(p) for p in model.contextual.selector.parameters()}
        trained = {id(p) for params in model.side_parameters().values() for p in params}
        in_groups = {id(p) for group in model.optimizer_param_groups(cfg) for p in group["params"]}
        assert (selector <= trained) == (selector <= in_groups) == train_selector, train_selector
        assert selector & trained == (selector if train_selector else set())
        assert {id(p) for p in model.contextual.mu.parameters()} <= trained  # the rest of the module trains


def test_a_plain_trainer_is_refused():
    model = build_model(_cfg()).train()
    with pytest.raises(InputValueError, match="CaGNet trains with three optimisers: run projects/CaGNet/train_net.py"):
        model(_batch(_cfg(), 1))


def test_training_labels_are_checked_against_the_seen_classes():
    cfg = _cfg()
    model = build_model(cfg).train()
    batch = _batch(cfg, 1)
    unseen_id = model.seen_class_set.dataset_classes.index(model.class_set.unseen[0])
    batch[0]["sem_seg"][:4, :4] = unseen_id
    with pytest.raises(InputValueError, match="not in the current class set"):
        model.step1_losses(batch)


PROJECT_CONFIGS = sorted(os.path.relpath(p, CONFIGS) for p in glob.glob(os.path.join(PROJECT, "configs", "**", "*.yaml"),
                                                                      recursive=True))


@pytest.mark.parametrize("config", PROJECT_CONFIGS)
def test_configs_build_and_run_forward(config):
    """Every shipped config (zs_shapes and the GPU ones, on the tiny preset's classes) builds a CaGNet
    and runs one forward pass."""
    model = build_model(_cfg(config, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu")).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 80)).float(), "height": 64, "width": 80}])
    assert type(model).__name__ == "CaGNet" and out[0]["sem_seg"].shape == (22, 64, 80)


# ---- end to end ---------------------------------------------------------------------------------
def _run(config, out, *opts):
    status, log, err = run_in_process(cagnet_train_net.invoke_main, [
        "--config-file", os.path.join(CONFIGS, config), *TINY, *TEST, *SMALL, "OUTPUT_DIR", str(out), *opts])
    return status, log + err


def _weights(path):
    return {k: v for k, v in torch.load(path, map_location="cpu", weights_only=False)["model"].items()}


def test_phases_end_to_end(tmp_path, pixel_stage1):
    status, log = _run("cagnet_train.yaml", tmp_path / "train", "SOLVER.MAX_ITER", "3", "MODEL.WEIGHTS", str(pixel_stage1))
    assert status == 0, log[-3000:]
    assert "CaGNet starts from a segmenter checkpoint: backbone and head loaded" in log  # stage 1's classifier left out
    trained = tmp_path / "train" / "model_final.pth"
    status, log = _run("cagnet.yaml", tmp_path / "ft", "MODEL.WEIGHTS", str(trained), "SOLVER.MAX_ITER", "4",
                       "MODEL.CAGNET.STEP1_ITERS", "2", "MODEL.CAGNET.STEP2_ITERS", "2")
    assert status == 0, log[-3000:]
    metrics = (tmp_path / "ft" / "metrics.json").read_text()
    assert "loss_d_transfer_class" in metrics and "loss_kl" not in metrics  # step 2 ran; the segmenter side is frozen
    before, after = _weights(trained), _weights(tmp_path / "ft" / "model_final.pth")
    for k in before:
        changed = not torch.equal(before[k], after[k])
        frozen = k.startswith(("backbone.", "head.", "contextual."))
        assert changed != frozen or "num_batches_tracked" in k or "running_" in k, k
    results = json.loads((tmp_path / "ft" / "zero_shot_results.json").read_text())
    assert set(results["zs_shapes_tiny_val_panoptic"]["sem_seg"]) >= {"mIoU/seen", "mIoU/unseen", "mIoU/hm"}

    pool = ["MODEL.CAGNET.SELF_TRAINING.DATASETS", "('zs_shapes_tiny_unlabelled',)",
            "MODEL.WEIGHTS", str(tmp_path / "ft" / "model_final.pth")]
    status, log = _run("cagnet_st.yaml", tmp_path / "st", *pool, "SOLVER.MAX_ITER", "2",
                       "MODEL.CAGNET.SELF_TRAINING.TOP_P", "22")
    assert status == 0, log[-3000:]
    assert "Self-training (transductive)" in log and "cagnet/pseudo_labelled" in (tmp_path / "st" / "metrics.json").read_text()

    # one line each: a labelled pool, a stage-1 checkpoint that is not a CaGNet
    status, log = _run("cagnet_st.yaml", tmp_path / "bad", *pool, "MODEL.CAGNET.SELF_TRAINING.DATASETS",
                       "('zs_shapes_tiny_val_panoptic',)")
    assert status == 2 and "ERROR: Self-training dataset 'zs_shapes_tiny_val_panoptic' carries labels" in log
    status, log = _run("cagnet.yaml", tmp_path / "bad2", "MODEL.WEIGHTS", str(pixel_stage1))
    assert status == 2 and "is not a CaGNet checkpoint (no contextual, generator, real_fake, classifier.trunk)" in log
    status, log2 = _run("cagnet.yaml", tmp_path / "bad3", "MODEL.WEIGHTS", "")
    assert status == 2 and ("ERROR: CaGNet's 'finetune' phase continues a trained CaGNet: MODEL.WEIGHTS is empty; set "
                            "MODEL.WEIGHTS to the model_final.pth of a CaGNet run with MODEL.CAGNET.PHASE 'train'") in log2
    status, log3 = _run("cagnet_train.yaml", tmp_path / "bad4", "MODEL.CAGNET.PHASE", "mixed", "MODEL.WEIGHTS", "")
    assert status == 2 and "ERROR: MODEL.CAGNET.PHASE 'mixed' is not one of ['train', 'finetune', 'self_training']" in log3
    assert "Traceback" not in log + log2 + log3


def test_train_phase_under_two_processes(tmp_path):
    """projects/CaGNet/train_net.py --num-gpus 2 (detectron2's launch, gloo): each side's gradients are
    averaged over the processes before its step, so both end with the same weights (checked by the
    trainer, which would stop with an error otherwise)."""
    command = [sys.executable, os.path.join(PROJECT, "train_net.py"), "--num-gpus", "2", "--config-file",
               os.path.join(CONFIGS, "cagnet_train.yaml"), *TINY, "DATASETS.TEST", "()", *SMALL,
               "SOLVER.MAX_ITER", "2", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    assert "CaGNet: the 2 processes hold identical weights" in log
