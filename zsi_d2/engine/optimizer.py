"""detectron2's optimizer, plus SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model", AdamW, and the
backbone / embedding settings of the mask-classification core (SOLVER.OPTIMIZER,
BACKBONE_MULTIPLIER, WEIGHT_DECAY_EMBED; keys of zsi_d2.modeling.mask_former.config).

Why: detectron2 0.6 clips each parameter's gradient on its own ("norm", "value"), while the
reference codes clip the norm of all gradients together (mmdetection's grad_clip for ZSI, max norm
35; Mask2Former's "full_model" clipping). detectron2 0.6 has a global clipper
only inside a private helper; `with_full_model_clipping` is the public equivalent, as Mask2Former's
own train_net writes it.
"""
import itertools

import torch
from torch import nn

from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from ..errors import InputValueError
from ..utils.model import unwrap

__all__ = ["build_optimizer", "param_groups", "with_full_model_clipping"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
          nn.InstanceNorm2d)
_OPTIMIZERS = ("SGD", "ADAM", "ADAMW")


def _uses_defaults(cfg, model) -> bool:
    if hasattr(unwrap(model), "optimizer_param_groups"):
        return False
    solver = cfg.SOLVER
    return (solver.get("OPTIMIZER", "SGD") == "SGD" and solver.get("BACKBONE_MULTIPLIER", 1.0) == 1.0
            and solver.get("WEIGHT_DECAY_EMBED", None) in (None, solver.WEIGHT_DECAY))


def param_groups(cfg, model):
    """One group per trainable parameter: backbone lr x BACKBONE_MULTIPLIER; weight decay
    WEIGHT_DECAY_NORM on norm layers, WEIGHT_DECAY_EMBED on nn.Embedding (learned queries, level
    embeddings), WEIGHT_DECAY elsewhere (Mask2Former's optimiser set-up)."""
    solver, seen, groups = cfg.SOLVER, set(), []
    for module_name, module in model.named_modules():
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or id(value) in seen:
                continue
            seen.add(id(value))
            lr, decay = solver.BASE_LR, solver.WEIGHT_DECAY
            if module_name.split(".")[0] == "backbone" or ".backbone." in f".{module_name}.":
                lr *= solver.BACKBONE_MULTIPLIER
            if isinstance(module, _NORMS):
                decay = solver.WEIGHT_DECAY_NORM
            elif isinstance(module, nn.Embedding):
                decay = solver.WEIGHT_DECAY_EMBED
            groups.append({"params": [value], "lr": lr, "weight_decay": decay})
    return groups


def with_full_model_clipping(optimizer_class, max_norm: float, norm_type: float = 2.0):
    """`optimizer_class` whose step first clips the norm of all gradients together to `max_norm`
    (Mask2Former's "full_model" clipping, mmdetection's grad_clip), as detectron2's global-clipper
    optimizers do; written here because detectron2 0.6 exposes only per-parameter clipping."""

    class FullModelGradientClip(optimizer_class):
        def step(self, closure=None):
            params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=norm_type)
            return super().step(closure)

    name = optimizer_class.__name__ + "FullModelGradientClip"
    FullModelGradientClip.__name__ = FullModelGradientClip.__qualname__ = name
    return FullModelGradientClip


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """detectron2's build_optimizer (SGD, its parameter groups); with SOLVER.OPTIMIZER "ADAMW" or a
    BACKBONE_MULTIPLIER / WEIGHT_DECAY_EMBED, `param_groups`. With CLIP_TYPE "full_model" the total
    gradient norm over all parameters is clipped to CLIP_VALUE (NORM_TYPE) before every step."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    full_model = clip.ENABLED and clip.CLIP_TYPE == "full_model"
    plain = cfg.clone()
    plain.defrost()
    if full_model:
        plain.SOLVER.CLIP_GRADIENTS.ENABLED = False
    solver = cfg.SOLVER
    if _uses_defaults(cfg, model):  # exactly detectron2's build_optimizer
        groups = get_default_optimizer_params(
            model, base_lr=solver.BASE_LR, weight_decay_norm=solver.WEIGHT_DECAY_NORM,
            bias_lr_factor=solver.BIAS_LR_FACTOR, weight_decay_bias=solver.WEIGHT_DECAY_BIAS)
        optimizer_class, kwargs = torch.optim.SGD, dict(
            lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV, weight_decay=solver.WEIGHT_DECAY)
    else:
        name = solver.OPTIMIZER
        if name not in _OPTIMIZERS:
            raise InputValueError(f"SOLVER.OPTIMIZER '{name}' is not one of {list(_OPTIMIZERS)}")
        # A model with its own split of parameters (PADing's stage 2: the generator side) names them.
        own = getattr(unwrap(model), "optimizer_param_groups", None)
        groups = own(cfg) if own is not None else param_groups(cfg, model)
        if name == "SGD":
            optimizer_class, kwargs = torch.optim.SGD, dict(lr=solver.BASE_LR, momentum=solver.MOMENTUM,
                                                            nesterov=solver.NESTEROV)
        else:
            optimizer_class = torch.optim.AdamW if name == "ADAMW" else torch.optim.Adam
            kwargs = dict(lr=solver.BASE_LR)
    optimizer_class = maybe_add_gradient_clipping(plain, optimizer_class)
    if full_model:
        optimizer_class = with_full_model_clipping(optimizer_class, clip.CLIP_VALUE, clip.NORM_TYPE)
    return optimizer_class(groups, **kwargs)
