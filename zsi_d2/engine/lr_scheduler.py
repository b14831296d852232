"""detectron2's LR schedulers plus "WarmupPolyLR" (Mask2Former's: lr x (1 - iter / MAX_ITER) ** POWER).

detectron2 0.6 builds only WarmupMultiStepLR and WarmupCosineLR; the poly schedule is written here
with fvcore's PolynomialDecayParamScheduler and detectron2's own warm-up wrapper.
"""
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler

__all__ = ["build_lr_scheduler"]


def build_lr_scheduler(cfg, optimizer):
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    sched = PolynomialDecayParamScheduler(1.0, solver.POLY_LR_POWER)
    if solver.WARMUP_ITERS > 0:
        sched = WarmupParamScheduler(sched, solver.WARMUP_FACTOR, min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
                                     solver.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=solver.MAX_ITER)
