"""detectron2's optimizer, plus SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model".

Why: detectron2 0.6 clips each parameter's gradient on its own ("norm", "value"), while the
reference codes clip the norm of all gradients together (mmdetection's grad_clip for ZSI, max norm
35; Mask2Former's "full_model" clipping). detectron2 already has the hook for a global clipper
(`_generate_optimizer_class_with_gradient_clipping`); this fills it with `clip_grad_norm_`.
"""
import functools

import torch

from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping

__all__ = ["build_optimizer"]


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """detectron2's build_optimizer; with CLIP_TYPE "full_model" the total gradient norm over all
    parameters is clipped to CLIP_VALUE (NORM_TYPE) before every step."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        return d2_build_optimizer(cfg, model)
    plain = cfg.clone()
    plain.defrost()
    plain.SOLVER.CLIP_GRADIENTS.ENABLED = False
    optimizer = d2_build_optimizer(plain, model)
    clipper = functools.partial(torch.nn.utils.clip_grad_norm_, max_norm=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(type(optimizer), global_clipper=clipper)
    return optimizer
