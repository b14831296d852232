"""Pictures of zero-shot predictions in which seen and unseen classes are told apart at a glance."""
import numpy as np

from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_zero_shot_instances", "image_grid", "SEEN_COLOR", "UNSEEN_COLOR"]

SEEN_COLOR = (0.12, 0.47, 0.71)  # blue: classes with training labels
UNSEEN_COLOR = (1.0, 0.0, 1.0)  # magenta: classes never labelled in training (as in the zs_shapes preview)


def draw_zero_shot_instances(image_rgb, instances, metadata, scale=3.0, with_scores=True):
    """Draw boxes, masks and names; unseen classes in magenta and tagged "[unseen]".

    `instances` may be predictions (pred_classes, scores, pred_masks) or ground truth
    (gt_classes, gt_masks); class ids index `metadata.thing_classes`.
    """
    unseen = set(metadata.get("unseen_classes", ()))
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
    labels, colors = [], []
    for i, c in enumerate(classes):
        name = names[c]
        tag = " [unseen]" if name in unseen else ""
        score = f" {scores[i]:.2f}" if scores is not None else ""
        labels.append(f"{name}{tag}{score}")
        colors.append(UNSEEN_COLOR if name in unseen else SEEN_COLOR)
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    vis._default_font_size = 3.5  # points before scaling: small enough for 128 px images
    # Outlines, barely filled: the object's own colour is what the class name describes.
    out = vis.overlay_instances(
        boxes=boxes, masks=None if masks is None else [m for m in masks], labels=labels,
        assigned_colors=colors, alpha=0.05,
    )
    return out.get_image()


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
