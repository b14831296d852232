"""Generate a zs_shapes dataset, print its counts and optionally write a preview contact sheet.

    python -m zsi_d2.data.zs_shapes --difficulty default [--preview out.png] [--root DIR]

The preview shows validation images with instance outlines and class names: seen classes in
white, unseen classes in magenta, unlabelled distractors (ignore pixels) outlined in grey, and
the stuff classes of each image in the caption below it.
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

from ...errors import InputValueError

_SEEN_BGR = (255, 255, 255)
_UNSEEN_BGR = (255, 0, 255)
_IGNORED_BGR = (150, 150, 150)


def _print_counts(meta, split):
    print(f"zs_shapes '{meta['difficulty_name']}' (hash {meta['hash']}, generator v{meta['generator_version']})")
    for subset in ("train", "val"):
        c = meta["counts"][subset]
        unseen_inst = sum(v for k, v in c["things"].items() if split.is_unseen(k))
        unseen_stuff = sum(v for k, v in c["stuff_segments"].items() if split.is_unseen(k))
        print(
            f"\n[{subset}] {c['images']} images, {c['instances']} instances "
            f"({c['instances'] - unseen_inst} seen, {unseen_inst} unseen), "
            f"{sum(c['stuff_segments'].values())} stuff segments ({unseen_stuff} unseen), "
            f"{c['distractors']} distractors, {c['dropped_objects']} objects dropped by occlusion"
        )
        for name in split.classes:
            count = c["things"].get(name, c["stuff_segments"].get(name, 0))
            tag = "unseen" if split.is_unseen(name) else "seen"
            kind = "stuff" if name in split.stuff else "thing"
            print(f"  {name:<24} {kind:<5} {tag:<6} {count:>6}")


def _put_label(canvas, text, org, colour, scale=0.38):
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    x = int(np.clip(org[0], 0, canvas.shape[1] - w - 1))
    y = int(np.clip(org[1], h + 1, canvas.shape[0] - base - 1))
    cv2.rectangle(canvas, (x - 1, y - h - 1), (x + w + 1, y + base), (0, 0, 0), -1)
    cv2.putText(canvas, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)


def _outline(canvas, mask, scale, colour):
    big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, 1, cv2.LINE_AA)


def write_preview(dicts, metadata, path, num=12, cols=4, scale=3, segments_by_image=None):
    """Contact sheet of `num` images of an instance view: outlines + names, unseen in magenta; the
    stuff of each image captioned from `segments_by_image` ({image_id: segments_info} of the
    `_panoptic` view, whose category ids index stuff_classes)."""
    from pycocotools import mask as mask_util

    tiles = []
    unseen = set(metadata.unseen_classes)
    for d in dicts[:num]:
        img = cv2.imread(d["file_name"], cv2.IMREAD_COLOR)
        tile = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        sem = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        _outline(tile, sem == metadata.ignore_label, scale, _IGNORED_BGR)
        for ann in d["annotations"]:
            name = metadata.thing_classes[ann["category_id"]]
            colour = _UNSEEN_BGR if name in unseen else _SEEN_BGR
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            _outline(tile, mask, scale, colour)
            x, y, _, _ = ann["bbox"]
            _put_label(tile, name, (x * scale, y * scale - 2), colour)
        caption = np.zeros((38, tile.shape[1], 3), dtype=np.uint8)
        segments = (segments_by_image or {}).get(d["image_id"], [])
        stuff = [metadata.stuff_classes[s["category_id"]] for s in segments if not s["isthing"]]
        for row, name in enumerate(stuff[:3]):
            colour = _UNSEEN_BGR if name in unseen else (200, 200, 200)
            cv2.putText(caption, name, (4, 10 + 11 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1, cv2.LINE_AA)
        tiles.append(np.concatenate([tile, caption], axis=0))
    if not tiles:
        raise InputValueError(f"nothing to preview (--num-preview {num}): preview at least one image")
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    gap = lambda t: np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=40)  # noqa: E731
    rows = [np.concatenate([gap(t) for t in tiles[i:i + cols]], axis=1) for i in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, sheet):
        raise IOError(f"could not write {path}")
    return path


def main(argv=None):
    import zsi_d2  # noqa: F401  (compat layer + registration)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from ..splits import get_split
    from . import dataset_names, ensure_generated, preset_names, register_all_zs_shapes
    from .generate import SPLIT_NAME

    parser = argparse.ArgumentParser(prog="python -m zsi_d2.data.zs_shapes", description=__doc__.split("\n")[0])
    parser.add_argument("--difficulty", default="default", choices=preset_names())
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--preview", default=None, help="write a contact sheet PNG of validation images here")
    parser.add_argument("--num-preview", type=int, default=12)
    parser.add_argument("--subset", default="val", choices=tuple(dataset_names("default", short=True)),
                        help="subset to preview (val_ov: the distractors named, as the open-vocabulary set)")
    args = parser.parse_args(argv)

    setup_logger(name="zsi_d2")
    if args.root is not None:
        register_all_zs_shapes(args.root)
    start = time.perf_counter()
    base = ensure_generated(args.difficulty, args.root)
    elapsed = time.perf_counter() - start
    with open(os.path.join(base, "meta.json")) as f:
        meta = json.load(f)
    _print_counts(meta, get_split(SPLIT_NAME))
    print(f"\ndataset folder: {base}  (ready in {elapsed:.1f} s)")
    if args.preview:
        name = dataset_names(args.difficulty)[args.subset]
        panoptic = dataset_names(args.difficulty, view="panoptic")[args.subset]
        segments = {d["image_id"]: d["segments_info"] for d in DatasetCatalog.get(panoptic)}
        path = write_preview(DatasetCatalog.get(name), MetadataCatalog.get(name), args.preview, args.num_preview,
                             segments_by_image=segments)
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    from ...errors import exit_on_input_error

    with exit_on_input_error():
        sys.exit(main())
