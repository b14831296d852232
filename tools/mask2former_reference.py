"""The published Mask2Former at a zsi_d2 config's architecture, for `tools/benchmark.py --mask2former`.

Why: the core's speed and memory targets are set by the reference Mask2Former measured on another
machine (../shared/reference/zero_shot_facts.md section 6), and a ratio to a yardstick need not carry
across CPUs. Timing the reference's own code beside zsi_d2's core in one process removes that doubt.

What runs is Mask2Former's own code from a local checkout of facebookresearch/Mask2Former
(meta-architecture, pixel decoder, transformer decoder, matcher, criterion, inference), on the
config's backbone, data and architecture keys, with the closed-set linear classifier over the
training set's `stuff_classes` that section 6 used. The one change section 6 made (its
deformable-attention module raises at import without the compiled CUDA op) is made here without
editing the checkout: a stand-in module without the op's functions lets the import pass, and the
module's own fallback (`ms_deform_attn_core_pytorch`, on the failed call) runs. Nothing of it is
copied into zsi_d2.
"""
import os
import subprocess
import sys
import types

from zsi_d2.errors import InputFileNotFoundError

__all__ = ["import_mask2former", "mask2former_commit", "reference_cfg"]

_OP_MODULE = "MultiScaleDeformableAttention"
_MARKER = os.path.join("mask2former", "maskformer_model.py")


def _checkout(root):
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isfile(os.path.join(root, _MARKER)):
        raise InputFileNotFoundError(
            f"--mask2former {root}: not a Mask2Former checkout (no {_MARKER}); clone "
            "https://github.com/facebookresearch/Mask2Former and pass its folder"
        )
    return root


def import_mask2former(root):
    """Import the checkout's `mask2former` package (registers its components in detectron2)."""
    root = _checkout(root)
    if _OP_MODULE not in sys.modules:
        try:
            __import__(_OP_MODULE)
        except ImportError:
            sys.modules[_OP_MODULE] = types.ModuleType(_OP_MODULE)  # no op: its CPU fallback runs
    if root not in sys.path:
        sys.path.insert(0, root)
    import mask2former  # noqa: F401

    return mask2former


def mask2former_commit(root):
    """Short commit of the checkout, or "" when it is not a git work tree."""
    try:
        out = subprocess.run(["git", "-C", _checkout(root), "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def _copy_common(dst, src):
    """Every key of `src` that `dst` also has (recursing into nodes); nodes `dst` lacks are added
    whole, so zsi_d2's backbone and data keys come along."""
    for key, value in src.items():
        if key not in dst:
            dst[key] = value.clone() if hasattr(value, "clone") else value
        elif hasattr(value, "items") and hasattr(dst[key], "items"):
            _copy_common(dst[key], value)
        else:
            dst[key] = value


def reference_cfg(cfg, root):
    """Mask2Former's config for the architecture `cfg` describes (same backbone, dims, layers,
    queries, points, losses, input, solver and datasets)."""
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog
    from detectron2.projects.deeplab import add_deeplab_config

    import_mask2former(root)
    from mask2former import add_maskformer2_config

    ref = get_cfg()
    add_deeplab_config(ref)
    add_maskformer2_config(ref)
    _copy_common(ref, cfg)
    ref.MODEL.META_ARCHITECTURE = "MaskFormer"
    ref.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    ref.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    # Section 6's classifier: linear over every class of the training set's panoptic label space.
    ref.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).stuff_classes)
    ref.TEST.DETECTIONS_PER_IMAGE = cfg.MODEL.MASK_FORMER.TEST.DETECTIONS_PER_IMAGE or \
        cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    ref.freeze()
    return ref
