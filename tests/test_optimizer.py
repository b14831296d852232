"""SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model": the norm of all gradients together is clipped."""
import torch

from detectron2.config import get_cfg

from zsi_d2.engine import build_optimizer


def _step(clip_type, value=1.0):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 1.0, 0.0, 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    model = torch.nn.Module()
    model.a = torch.nn.Parameter(torch.zeros(1))
    model.b = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(cfg, model)
    model.a.grad, model.b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # total norm 5
    optimizer.step()
    return model.a.item(), model.b.item()


def test_full_model_clipping_scales_all_gradients_by_one_factor():
    a, b = _step("full_model", value=1.0)
    assert abs(a + 3 / 5) < 1e-6 and abs(b + 4 / 5) < 1e-6  # SGD step of lr 1 with grads (3, 4) / 5


def test_per_parameter_norm_clipping_stays_detectron2s():
    a, b = _step("norm", value=1.0)
    assert abs(a + 1) < 1e-6 and abs(b + 1) < 1e-6  # each gradient clipped to norm 1 on its own


def test_default_optimizer_is_detectron2s():
    """Without zsi_d2's settings the optimizer is detectron2's build_optimizer to the group: the same
    class, hyper-parameters and parameter groups (so the R-CNN numbers do not move)."""
    from detectron2.solver import build_optimizer as d2_build_optimizer

    cfg = get_cfg()
    cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.BIAS_LR_FACTOR = 0.0, 2.0
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    ours, reference = build_optimizer(cfg, model), d2_build_optimizer(cfg, model)
    assert type(ours) is type(reference) and ours.defaults == reference.defaults
    strip = [[{k: v for k, v in g.items() if k != "params"}, [id(p) for p in g["params"]]] for g in ours.param_groups]
    assert strip == [[{k: v for k, v in g.items() if k != "params"}, [id(p) for p in g["params"]]]
                     for g in reference.param_groups]
    assert {g["lr"] for g in ours.param_groups} == {cfg.SOLVER.BASE_LR, 2 * cfg.SOLVER.BASE_LR}
