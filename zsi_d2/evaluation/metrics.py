"""Shared zero-shot summarisation: seen / unseen / harmonic mean of per-class numbers.

Why a separate module: the instance, panoptic and semantic evaluators (and the CLI, and
train_net) must agree on *exactly* how per-class numbers become the headline numbers, otherwise
"unseen AP" and "unseen mIoU" would silently mean different things. The rules, used everywhere:

* A per-class value is `nan` when the class cannot be scored (no ground truth for AP, no
  prediction/GT at all for PQ or IoU). `nan` classes are excluded from every mean.
* `seen` / `unseen` are the unweighted means over the split's seen / unseen classes; a class that
  is in neither group (e.g. a split's "ignored" classes) gets a per-class number only.
* `hm` = 2·s·u / (s + u), 0 when both are 0, `nan` when either side is `nan` (nothing to score).
* gzsi mode reports seen, unseen and hm; zsi mode reports unseen only.

Numbers are in percent (0-100), like detectron2's COCOEvaluator.
"""
import logging
import math
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Sequence

from tabulate import tabulate

from ..data.metadata import EVALUATION_MODES
from ..errors import InputValueError

logger = logging.getLogger(__name__)

__all__ = [
    "evaluated_groups",
    "nan_groups",
    "nan_to_none",
    "ZERO_SHOT_MODES",
    "GROUP_SUFFIXES",
    "harmonic_mean",
    "nanmean",
    "check_mode",
    "mode_from_metadata",
    "summarize_zero_shot",
    "format_zero_shot_table",
    "format_per_class_table",
]

ZERO_SHOT_MODES = EVALUATION_MODES  # the modes a test set is scored in (zsi_d2.data.metadata)
# Suffixes of the aggregated keys ("AP50/seen", ...). Anything else after "/" is a class name.
GROUP_SUFFIXES = ("seen", "unseen", "hm")


def harmonic_mean(seen: float, unseen: float) -> float:
    """Harmonic mean 2su/(s+u) of a seen and an unseen score.

    The HM is the standard GZSI headline number because it is only high when *both* sides are:
    a model that ignores unseen classes gets HM 0 however good its seen score is.
    Returns 0 when both are 0 and nan when either is nan (one side could not be scored).
    """
    seen, unseen = float(seen), float(unseen)
    if math.isnan(seen) or math.isnan(unseen):
        return float("nan")
    if seen + unseen == 0:
        return 0.0
    return 2.0 * seen * unseen / (seen + unseen)


def nanmean(values: Iterable[float]) -> float:
    """Mean over the non-nan values; nan (without a numpy warning) when there are none."""
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        return float("nan")
    return sum(finite) / len(finite)


def check_mode(mode: str) -> str:
    if mode not in ZERO_SHOT_MODES:
        raise InputValueError(f"Unknown zero-shot evaluation mode {mode!r} (--mode, mode): use one of "
                              f"{ZERO_SHOT_MODES}")
    return mode


def mode_from_metadata(metadata, dataset_name: str, seen_only_as_gzsi: bool = True) -> str:
    """The evaluation mode of a dataset's `zero_shot_mode` (default "gzsi").

    A seen-only set ("train", e.g. the held-out `zs_shapes_calib`) named as a test set is evaluated
    like GZSI: only its seen groups have ground truth, so the unseen and HM columns are nan. That is
    how a model is chosen on held-out images without reading unseen labels. `seen_only_as_gzsi`
    False refuses it instead (the evaluation CLI, where it more likely means a wrong --dataset)."""
    mode = metadata.get("zero_shot_mode", "gzsi")
    if mode == "train" and seen_only_as_gzsi:
        return "gzsi"
    if mode not in ZERO_SHOT_MODES:
        raise InputValueError(
            f"Dataset '{dataset_name}' has zero_shot_mode={mode!r}; zero-shot evaluation needs one "
            f"of {ZERO_SHOT_MODES} (set it where the dataset is registered: make_zero_shot(name, split, mode))"
        )
    return mode


def summarize_zero_shot(
    metric: str,
    per_class: Mapping[str, float],
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
    per_class_keys: bool = True,
) -> "OrderedDict[str, float]":
    """Turn `{class name: value}` into `{"<metric>/seen", "<metric>/unseen", "<metric>/hm", ...}`.

    Args:
        metric: key prefix, e.g. "AP50", "PQ_th", "mIoU".
        per_class: value per class name (nan = not scorable, excluded from means).
        seen_names, unseen_names: the split's groups. Names missing from `per_class` are treated
            as nan, so a group may legitimately be empty (its mean is then nan).
        mode: "gzsi" reports seen, unseen, hm; "zsi" reports unseen only.
        per_class_keys: also emit "<metric>/<class name>" for every class in `per_class`
            (in zsi mode: only the unseen classes).
    """
    check_mode(mode)
    unseen_value = nanmean(per_class.get(n, float("nan")) for n in unseen_names)
    out = OrderedDict()
    if mode == "gzsi":
        seen_value = nanmean(per_class.get(n, float("nan")) for n in seen_names)
        out[f"{metric}/seen"] = seen_value
        out[f"{metric}/unseen"] = unseen_value
        out[f"{metric}/hm"] = harmonic_mean(seen_value, unseen_value)
    else:
        out[f"{metric}/unseen"] = unseen_value
    if per_class_keys:
        unseen_set = set(unseen_names)
        for name, value in per_class.items():
            if name in GROUP_SUFFIXES:
                raise InputValueError(
                    f"A class is named {name!r}, which collides with the aggregated key "
                    f"'{metric}/{name}'; rename the class."
                )
            if mode == "zsi" and name not in unseen_set:
                continue
            out[f"{metric}/{name}"] = float(value)
    return out


def _task_dicts(results: Mapping) -> "OrderedDict[str, Mapping]":
    return OrderedDict((k, v) for k, v in results.items() if isinstance(v, Mapping))


def _fmt(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.2f}"


def _single_table(results: Mapping[str, float]) -> str:
    columns = OrderedDict((("seen", "seen"), ("unseen", "unseen"), ("hm", "HM"), ("", "all")))
    rows: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
    used = set()
    for key, value in results.items():
        if "/" in key:
            metric, group = key.split("/", 1)
            if group not in GROUP_SUFFIXES:
                continue  # per-class entry
        else:
            metric, group = key, ""
        rows.setdefault(metric, {})[group] = value
        used.add(group)
    shown = [g for g in columns if g in used]
    if not rows:
        return "(no zero-shot metrics)"
    table = [[metric] + [_fmt(cells.get(g)) for g in shown] for metric, cells in rows.items()]
    return tabulate(
        table, headers=["metric"] + [columns[g] for g in shown], tablefmt="pipe",
        stralign="center", numalign="center", disable_numparse=True,
    )


def format_zero_shot_table(results: Mapping) -> str:
    """Render zero-shot results as a table: one row per metric, columns seen / unseen / HM.

    Accepts either one task's flat dict ({"AP50/seen": ...}) or an evaluator's nested output
    ({"bbox": {...}, "segm": {...}}), in which case one titled table per task is produced
    (non-dict entries of such a mapping are ignored).
    Per-class keys ("AP50/person") are left out; keys without a group suffix ("mIoU", "pAcc")
    go to an extra "all" column. Missing cells (e.g. seen/HM in zsi mode) print as "-".
    """
    tasks = _task_dicts(results)
    if tasks:
        return "\n\n".join(f"{task}:\n{_single_table(res)}" for task, res in tasks.items())
    return _single_table(results)


def format_per_class_table(
    results: Mapping[str, float],
    class_names: Sequence[str],
    seen_names: Optional[Sequence[str]] = None,
    unseen_names: Optional[Sequence[str]] = None,
) -> str:
    """Per-class table (rows = classes, columns = metrics) of one task's flat result dict.

    Used by the CLI's --per-class option. With `seen_names`/`unseen_names` a "group" column
    marks each class (seen / unseen / "-" for classes in neither group). Classes whose values are
    all nan (nothing to score) are left out and counted in a footnote.
    """
    metrics = []
    for key in results:
        if "/" in key:
            metric, name = key.split("/", 1)
            if name in class_names and metric not in metrics:
                metrics.append(metric)
    with_group = seen_names is not None or unseen_names is not None
    seen, unseen = set(seen_names or ()), set(unseen_names or ())
    headers = ["class"] + (["group"] if with_group else []) + metrics
    table, omitted = [], 0
    for name in class_names:
        values = [results[f"{m}/{name}"] for m in metrics if f"{m}/{name}" in results]
        if not values:
            continue
        if all(math.isnan(float(v)) for v in values):
            omitted += 1  # no GT and no prediction: nothing to show
            continue
        group = "unseen" if name in unseen else ("seen" if name in seen else "-")
        row = [name] + ([group] if with_group else [])
        row += [_fmt(results.get(f"{m}/{name}")) for m in metrics]
        table.append(row)
    text = tabulate(
        table, headers=headers, tablefmt="pipe", stralign="center", numalign="center", disable_numparse=True
    )
    if omitted:
        text += f"\n({omitted} class(es) without ground truth or predictions omitted)"
    return text


def nan_groups(results: Mapping[str, float]) -> list:
    """The groups ("seen", "unseen") of one task's flat results whose every number is nan, i.e.
    none of their classes could be scored (see the rules above); their HM is nan too."""
    out = []
    for group in ("seen", "unseen"):
        values = [v for k, v in results.items() if k.endswith("/" + group)]
        if values and all(math.isnan(float(v)) for v in values):
            out.append(group)
    return out


def nan_to_none(obj):
    """Nested results as strict JSON values: NaN (e.g. a class with no ground truth) becomes None."""
    if isinstance(obj, Mapping):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def evaluated_groups(metadata, dataset_name: str, known_names, what: str):
    """(seen, unseen): the split's classes that this evaluator can score, in split order.

    Split classes outside `known_names` (e.g. stuff classes for instance evaluation) are left out
    and logged, never silently scored as 0.
    """
    for field in ("seen_classes", "unseen_classes"):
        if not hasattr(metadata, field):
            raise InputValueError(f"Dataset '{dataset_name}' has no metadata '{field}', which {what} needs: make it "
                                  "zero-shot where it is registered, zsi_d2.data.make_zero_shot(name, split, mode)")
    known = set(known_names)
    seen = tuple(n for n in metadata.seen_classes if n in known)
    unseen = tuple(n for n in metadata.unseen_classes if n in known)
    dropped = [n for n in tuple(metadata.seen_classes) + tuple(metadata.unseen_classes) if n not in known]
    if dropped:
        logger.info(f"{what} on '{dataset_name}': {len(dropped)} split class(es) are not scored: {dropped}")
    return seen, unseen
