"""How far an exported model's outputs are from eager mode's: the largest difference of the float
outputs, whether every discrete output is equal (counts, classes, boxes' order, panoptic segments),
and how many pixels of the instances' binary masks differ. The last is apart because a mask pixel
is a float probability thresholded at 0.5: two runtimes that agree to 1e-7 can still put a pixel
whose probability is 0.5 to within that on different sides (seen: 1 pixel in 1.1 million, R-CNN
masks pasted from onnxruntime's 28x28 probabilities)."""
from typing import Dict

import numpy as np
import torch

__all__ = ["compare_outputs"]


def _segments(seg, info):
    """Panoptic segments as (category, isthing, pixels) sets: ids may be numbered differently."""
    seg = np.asarray(seg)
    return {(s["category_id"], s["isthing"], (seg == s["id"]).tobytes()) for s in info}


def compare_outputs(ours: Dict, eager: Dict) -> Dict:
    """{"max_abs_diff": float, "max_scaled_diff": float, "discrete_equal": bool, "first_difference":
    str or None, "mask_pixels_differing": int, "mask_pixels": int}. max_scaled_diff divides each
    output's difference by its largest eager magnitude where that exceeds 1 (semantic sums of
    mask-classification models reach several units): the 1e-4 tolerance is then relative there."""
    diffs, scaled, problems, masks = [0.0], [0.0], [], [0, 0]

    def walk(a, b, path):
        if isinstance(a, dict) or isinstance(b, dict):
            if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
                problems.append(f"{path}: keys {sorted(a) if isinstance(a, dict) else a} vs "
                                f"{sorted(b) if isinstance(b, dict) else b}")
                return
            for k in a:
                walk(a[k], b[k], f"{path}/{k}")
        elif torch.is_tensor(a) and torch.is_tensor(b):
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{path}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
            elif a.dtype.is_floating_point:
                if a.numel():
                    diffs.append((a - b).abs().max().item())
                    scaled.append(diffs[-1] / max(1.0, b.abs().max().item()))
            elif a.dtype == torch.bool and path.endswith("pred_masks"):
                masks[0] += int((a != b).sum())
                masks[1] += a.numel()
            elif not torch.equal(a, b):
                problems.append(f"{path}: {int((a != b).sum())} of {a.numel()} values differ")
        elif hasattr(a, "get_fields") and hasattr(b, "get_fields"):  # Instances
            if tuple(a.image_size) != tuple(b.image_size) or len(a) != len(b):
                problems.append(f"{path}: {len(a)} instances at {a.image_size} vs {len(b)} at {b.image_size}")
                return
            walk(a.get_fields(), b.get_fields(), path)
        elif hasattr(a, "tensor") and hasattr(b, "tensor"):  # Boxes, BitMasks
            walk(a.tensor, b.tensor, path)
        elif a != b:
            problems.append(f"{path}: {a!r} vs {b!r}")

    ours, eager = dict(ours), dict(eager)
    if "panoptic_seg" in ours and "panoptic_seg" in eager:
        (seg, info), (eager_seg, eager_info) = ours.pop("panoptic_seg"), eager.pop("panoptic_seg")
        if seg.shape != eager_seg.shape or _segments(seg, info) != _segments(eager_seg, eager_info):
            problems.append("panoptic_seg: the segments differ")
    walk(ours, eager, "")
    return {"max_abs_diff": max(diffs), "max_scaled_diff": max(scaled), "discrete_equal": not problems,
            "first_difference": problems[0] if problems else None,
            "mask_pixels_differing": masks[0], "mask_pixels": masks[1]}
