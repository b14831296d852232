"""Evaluate a model on each test dataset with the class set that dataset asks for."""
import logging
import os
from collections import OrderedDict

from detectron2.utils import comm

from ..evaluation.files import write_results_json
from ..modeling.class_set import use_class_set
from .calibration import calibrate_for_test

__all__ = ["zero_shot_test", "save_results"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "zero_shot_results.json"


def zero_shot_test(test_fn, cfg, model, evaluators=None):
    """Run `test_fn(cfg, model, evaluators)` (e.g. DefaultTrainer.test) one dataset at a time,
    switching the model's class set for each, and save all numbers to OUTPUT_DIR.

    Why: GZSI (seen + unseen) and ZSI (unseen only) need different class sets; taking them from
    each dataset's metadata means no flag is flipped by hand between evaluations.
    Calibrated stacking (MODEL.ZERO_SHOT.CALIBRATION) is set up first: its gamma is chosen on the
    held-out seen-only datasets it names, never on these test sets.
    """
    datasets = list(cfg.DATASETS.TEST)
    if evaluators is not None and len(evaluators) != len(datasets):
        raise ValueError(f"{len(evaluators)} evaluators given for {len(datasets)} test datasets")
    calibrate_for_test(cfg, model)
    results = OrderedDict()
    for i, name in enumerate(datasets):
        one = cfg.clone()
        one.defrost()
        one.DATASETS.TEST = (name,)
        one.freeze()
        with use_class_set(model, name):
            results[name] = test_fn(one, model, None if evaluators is None else [evaluators[i]])
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        save_results(results, os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE))
    return results


def save_results(results, path):
    """Write nested results as strict JSON (NaN becomes null) and say where."""
    write_results_json(results, path)
    logger.info(f"Saved zero-shot results to {path}")
