"""Pictures of zero-shot predictions in which seen and unseen classes are told apart at a glance.

Every view (instances, panoptic, semantic) uses the same rule: classes with training labels in blue,
classes never labelled in training (the split's unseen classes, or new names of a vocabulary) in
magenta and tagged "[unseen]"; labels are moved inside the image where they would overflow it.
Class ids follow detectron2's conventions: instance ids index `metadata.thing_classes`, semantic
channels and panoptic category ids index `metadata.stuff_classes`.
"""
import zlib

import cv2
import numpy as np
import torch

from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_zero_shot_instances", "draw_zero_shot_panoptic", "draw_zero_shot_semantic", "draw_prediction",
           "draw_legend", "image_grid", "keep_labels_inside", "SEEN_COLOR", "UNSEEN_COLOR", "OUTPUT_KEYS"]

SEEN_COLOR = (0.12, 0.47, 0.71)  # blue: classes with training labels
UNSEEN_COLOR = (1.0, 0.0, 1.0)  # magenta: classes never labelled in training (as in the zs_shapes preview)
# --task -> the key of a model output that holds it (detectron2's names)
OUTPUT_KEYS = {"instance": "instances", "panoptic": "panoptic_seg", "semantic": "sem_seg"}
_SMALL_IMAGE = 300  # px: smaller images are drawn enlarged, with a small font
_UNSEEN_TAG = " [unseen]"


def _is_unseen(name, metadata) -> bool:
    return name in set(metadata.get("unseen_classes", ()))


def _label(name, metadata) -> str:
    return name + (_UNSEEN_TAG if _is_unseen(name, metadata) else "")


def _class_color(name, metadata):
    """The group's colour (seen blue, unseen magenta), a little lighter or darker per class so that
    neighbouring regions of two classes of one group stay apart."""
    base = np.array(UNSEEN_COLOR if _is_unseen(name, metadata) else SEEN_COLOR)
    factor = 0.7 + 0.15 * (zlib.crc32(name.encode()) % 5)  # 0.7 ... 1.3
    return tuple(np.clip(base * factor, 0.0, 1.0).tolist())


def _visualizer(image_rgb, metadata, scale=None):
    """detectron2's Visualizer; small images (zs_shapes' 128 px) enlarged, with a font that fits them."""
    small = max(image_rgb.shape[:2]) < _SMALL_IMAGE
    vis = Visualizer(image_rgb, metadata, scale=scale or (3.0 if small else 1.0), instance_mode=ColorMode.IMAGE)
    if small:
        vis._default_font_size = 3.5  # points before scaling: small enough for 128 px images
    return vis


def keep_labels_inside(output, margin=4.0):
    """Move every label of a drawn VisImage so that it lies inside the image, `margin` px (its dark
    box) from the edges: detectron2 puts a label at a box corner or a mask's centre, which can be
    past the image's edge."""
    renderer = output.canvas.get_renderer()
    width, height = output.fig.canvas.get_width_height()
    to_display, to_data = output.ax.transData, output.ax.transData.inverted()
    for text in output.ax.texts:
        box = text.get_window_extent(renderer)  # the text's (its box patch is placed only when drawn)
        dx = max(0.0, margin - box.x0) - max(0.0, box.x1 - (width - margin))
        dy = max(0.0, margin - box.y0) - max(0.0, box.y1 - (height - margin))
        if dx or dy:
            x, y = to_display.transform(text.get_position())
            text.set_position(tuple(to_data.transform((x + dx, y + dy))))
    return output


def _draw_regions(image_rgb, regions, metadata, alpha=0.3):
    """`regions`: (binary mask, class name) pairs, drawn in order with their labels."""
    vis = _visualizer(image_rgb, metadata)
    for mask, name in regions:
        vis.draw_binary_mask(mask.astype(np.uint8), color=_class_color(name, metadata), edge_color=(1.0, 1.0, 1.0),
                             text=_label(name, metadata), alpha=alpha)
    return keep_labels_inside(vis.output).get_image()


def draw_zero_shot_instances(image_rgb, instances, metadata, scale=None, with_scores=True):
    """Draw boxes, masks and names; unseen classes in magenta and tagged "[unseen]".

    `instances` may be predictions (pred_classes, scores, pred_masks) or ground truth
    (gt_classes, gt_masks); class ids index `metadata.thing_classes`. `scale`: None enlarges small images.
    """
    names = metadata.thing_classes
    if instances.has("pred_classes"):
        classes = instances.pred_classes.tolist()
        scores = instances.scores.tolist() if with_scores and instances.has("scores") else None
        masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
        boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else None
    else:
        classes = instances.gt_classes.tolist()
        scores = None
        masks = instances.gt_masks.tensor.numpy() if instances.has("gt_masks") else None
        boxes = instances.gt_boxes.tensor.numpy() if instances.has("gt_boxes") else None
    labels = [_label(names[c], metadata) + (f" {scores[i]:.2f}" if scores is not None else "")
              for i, c in enumerate(classes)]
    colors = [UNSEEN_COLOR if _is_unseen(names[c], metadata) else SEEN_COLOR for c in classes]
    vis = _visualizer(image_rgb, metadata, scale)
    # Outlines, barely filled: the object's own colour is what the class name describes.
    out = vis.overlay_instances(
        boxes=boxes, masks=None if masks is None else [m for m in masks], labels=labels,
        assigned_colors=colors, alpha=0.05,
    )
    return keep_labels_inside(out).get_image()


def draw_zero_shot_panoptic(image_rgb, panoptic_seg, segments_info, metadata):
    """A panoptic segmentation ((H, W) segment ids; `segments_info` with "id", "category_id" into
    `metadata.stuff_classes`): stuff regions first, then things, each with its class name."""
    seg = panoptic_seg.cpu().numpy() if isinstance(panoptic_seg, torch.Tensor) else np.asarray(panoptic_seg)
    segments = sorted(segments_info, key=lambda s: bool(s.get("isthing", False)))
    regions = [(seg == s["id"], metadata.stuff_classes[s["category_id"]]) for s in segments]
    return _draw_regions(image_rgb, [(m, n) for m, n in regions if m.any()], metadata)


def draw_zero_shot_semantic(image_rgb, sem_seg, metadata, ignore_label=255):
    """A semantic segmentation: (C, H, W) class scores over `metadata.stuff_classes` (a model's
    "sem_seg") or (H, W) labels; the largest regions first."""
    if isinstance(sem_seg, torch.Tensor):
        sem_seg = (sem_seg.argmax(dim=0) if sem_seg.dim() == 3 else sem_seg).cpu().numpy()
    labels, areas = np.unique(sem_seg, return_counts=True)
    order = [int(labels[i]) for i in np.argsort(-areas) if labels[i] != ignore_label]
    return _draw_regions(image_rgb, [(sem_seg == c, metadata.stuff_classes[c]) for c in order], metadata)


def draw_prediction(image_rgb, output, metadata, task, score_thresh=0.5):
    """One model output (a dict of detectron2's "instances" / "panoptic_seg" / "sem_seg") drawn as `task`."""
    if task == "instance":
        instances = output["instances"].to("cpu")
        return draw_zero_shot_instances(image_rgb, instances[instances.scores >= score_thresh], metadata)
    if task == "panoptic":
        seg, segments_info = output["panoptic_seg"]
        return draw_zero_shot_panoptic(image_rgb, seg, segments_info, metadata)
    return draw_zero_shot_semantic(image_rgb, output["sem_seg"], metadata)


def draw_legend(names, metadata, width, row_height=18):
    """A white strip, `width` px wide, naming `names` in their colours: the training classes, then
    the unseen ones (tagged), wrapped over as many lines as needed."""
    font, size, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 6
    entries = sorted(dict.fromkeys(names), key=lambda n: _is_unseen(n, metadata))
    lines, line, x = [], [], pad
    for name in entries:
        text = _label(name, metadata)
        w = row_height + cv2.getTextSize(text, font, size, 1)[0][0] + 2 * pad
        if line and x + w > width:
            lines.append(line)
            line, x = [], pad
        line.append((x, name, text))
        x += w
    lines.append(line)
    strip = np.full((row_height * len(lines) + pad, width, 3), 255, np.uint8)
    for row, line in enumerate(lines):
        y = row * row_height + pad
        for x, name, text in line:
            color = tuple(int(255 * c) for c in _class_color(name, metadata))
            cv2.rectangle(strip, (x, y + 2), (x + row_height - 6, y + row_height - 4), color, -1)
            cv2.putText(strip, text, (x + row_height - 2, y + row_height - 6), font, size,
                        color if _is_unseen(name, metadata) else (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def image_grid(rows, pad=4, value=255):
    """Stack a list of rows (each a list of HxWx3 uint8 images of one height) into one image."""
    widths = [sum(im.shape[1] for im in row) + pad * (len(row) - 1) for row in rows]
    width = max(widths)
    out_rows = []
    for row in rows:
        h = row[0].shape[0]
        line = np.full((h, width, 3), value, np.uint8)
        x = 0
        for im in row:
            line[:, x:x + im.shape[1]] = im
            x += im.shape[1] + pad
        out_rows.append(line)
        out_rows.append(np.full((pad, width, 3), value, np.uint8))
    return np.concatenate(out_rows[:-1], axis=0)
