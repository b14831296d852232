#!/usr/bin/env python
"""Run any zsi_d2 model on your images (or a video) with any class names; draw and export the predictions.

    python demo.py --config-file CONFIG --weights model_final.pth --input IMAGE_OR_GLOB_OR_FOLDER ... \
        --vocabulary "red circle" "orange hexagon" "tv, television" --output DIR [--task panoptic] \
        [--opts KEY VALUE ...]
    python demo.py --backend onnxruntime --exported model.onnx --input ... --output DIR [--threads N]

--vocabulary: one class per argument; inside an argument, commas separate spellings of ONE class
("tv, television"). Without it the model scores its config's test set (seen + unseen classes);
--extra-vocabulary adds names to either.
Names that are training classes keep their identity (drawn blue); every other name is drawn in
magenta and tagged [unseen]. Writes DIR/<image>.png (or DIR/<video>.mp4) and COCO-format JSON:
DIR/coco_images.json (images, categories) and DIR/coco_results.json (the predictions), read by
pycocotools as COCO("DIR/coco_images.json").loadRes("DIR/coco_results.json").
--backend onnxruntime|torchscript runs a file written by tools/export_model.py (its weights, classes
and input size are fixed at export: no --config-file, --weights or --vocabulary); each image is
resized to the file's size and the outputs back to the image's (zsi_d2/export/predictor.py).
A known input mistake ends in one line on stderr and exit status 2.
"""
import argparse
import glob
import logging
import os

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from zsi_d2.config import command_config
from zsi_d2.engine import ZeroShotPredictor
from zsi_d2.errors import InputFileNotFoundError, InputValueError, exit_on_input_error
from zsi_d2.export import ExportedPredictor
from zsi_d2.modeling.vocabulary import vocabulary_entries
from zsi_d2.utils.coco_predictions import prediction_to_coco, write_coco_predictions
from zsi_d2.utils.model import unwrap
from zsi_d2.utils.visualizer import OUTPUT_KEYS, draw_legend, draw_prediction

logger = logging.getLogger("zsi_d2.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TASKS = tuple(OUTPUT_KEYS)
BACKENDS = ("pytorch", "onnxruntime", "torchscript")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.strip().splitlines()[1:]))
    p.add_argument("--backend", choices=BACKENDS, default="pytorch",
                   help="pytorch: the config and weights; onnxruntime / torchscript: an --exported file")
    p.add_argument("--exported", metavar="FILE", help="a file written by tools/export_model.py (export backends)")
    p.add_argument("--threads", type=int, help="CPU threads (onnxruntime's intra-op threads; torch's otherwise)")
    p.add_argument("--config-file", metavar="FILE", help="a zsi_d2 config (configs/...); --backend pytorch")
    p.add_argument("--weights", help="the trained model (.pth written by train_net.py); --backend pytorch")
    p.add_argument("--input", nargs="+", help="image files, glob patterns (quoted) or folders of images")
    p.add_argument("--video-input", help="a video file, predicted frame by frame")
    p.add_argument("--output", required=True, help="folder for the pictures and the COCO JSON")
    p.add_argument("--vocabulary", nargs="*", default=None, metavar="NAME",
                   help="class names, one per argument; 'a, b' = two spellings of one class")
    p.add_argument("--extra-vocabulary", nargs="+", default=(), metavar="NAME",
                   help="names scored beside --vocabulary, or beside the config's test set without it")
    p.add_argument("--stuff", nargs="*", default=(), metavar="NAME",
                   help="vocabulary entries that are amorphous regions (sky, grass): panoptic stuff")
    p.add_argument("--task", choices=TASKS, help="the view to draw and export (default: the model's first of "
                   "panoptic, instance, semantic)")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of instances")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return p


def expand_inputs(patterns):
    """Image paths of files, folders (their images, sorted) and glob patterns, in the order given."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, f) for f in os.listdir(pattern)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(os.path.expanduser(pattern)))
        if not found:
            raise InputFileNotFoundError(f"--input '{pattern}' matches no image file: give image files, a folder "
                                         "of images or a quoted glob pattern")
        paths.extend(found)
    for path in paths:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds: any means unreadable
            raise InputValueError(f"--input '{path}' is not a readable image ({type(e).__name__}): give image "
                                  f"files ({', '.join(IMAGE_EXTENSIONS)})") from None
    return paths


def choose_task(model, task):
    """The task to draw: `task` (switched on in a mask-classification model that has it off), else
    the first the model produces. A model that cannot produce `task` is an input error. `model` may
    be an ExportedPredictor: its tasks were fixed at export."""
    if isinstance(model, ExportedPredictor):
        flags, produced, name = {}, list(model.tasks), f"the exported {model.exported.family.name} model"
    else:
        model = unwrap(model)
        flags = {t: getattr(model, f"{t}_on") for t in TASKS if hasattr(model, f"{t}_on")}
        produced, name = [t for t, on in flags.items() if on] if flags else ["instance"], type(model).__name__
    if task is None:
        return sorted(produced, key=("panoptic", "instance", "semantic").index)[0]
    if task in flags:
        setattr(model, f"{task}_on", True)
    elif task not in produced:
        raise InputValueError(f"--task {task}: {name} predicts {', '.join(produced)} only; use --task {produced[0]}")
    return task


def names_in(output, task, metadata, threshold):
    """The class names an output shows (for the legend)."""
    if task == "instance":
        instances = output["instances"]
        return [metadata.thing_classes[c] for c in instances.pred_classes[instances.scores >= threshold].tolist()]
    if task == "panoptic":
        return [metadata.stuff_classes[s["category_id"]] for s in output["panoptic_seg"][1]]
    return [metadata.stuff_classes[c] for c in output["sem_seg"].argmax(dim=0).unique().tolist()]


def with_legend(drawing, names, metadata):
    return np.concatenate([drawing, draw_legend(names, metadata, drawing.shape[1])], axis=0)


class Demo:
    """Predicts, draws and collects COCO results, image after image."""

    def __init__(self, args, cfg=None):
        if args.backend == "pytorch":
            self.predictor = ZeroShotPredictor(cfg, args.vocabulary, stuff=args.stuff or (),
                                               extra_vocabulary=args.extra_vocabulary)
            model = self.predictor.model
        else:
            self.predictor = model = ExportedPredictor(args.exported, threads=args.threads)
            if self.predictor.format != args.backend.replace("onnxruntime", "onnx"):
                kind, backend = {"onnx": ("an ONNX", "onnxruntime"),
                                 "torchscript": ("a TorchScript", "torchscript")}[self.predictor.format]
                raise InputValueError(f"--backend {args.backend}: '{args.exported}' is {kind} export; use --backend "
                                      f"{backend}")
        self.metadata = self.predictor.metadata
        self.task = choose_task(model, args.task)
        self.threshold = args.confidence_threshold
        self.images, self.results = [], []

    def __call__(self, bgr, file_name, legend_names=None):
        """The drawing (RGB) of one BGR image; its predictions join the COCO results."""
        output = self.predictor(bgr)
        if OUTPUT_KEYS[self.task] not in output:
            raise InputValueError(f"--task {self.task}: the model gave no '{OUTPUT_KEYS[self.task]}' output")
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": bgr.shape[0], "width": bgr.shape[1]})
        self.results.extend(prediction_to_coco(output, self.task, image_id, self.metadata, self.threshold))
        drawing = draw_prediction(np.ascontiguousarray(bgr[:, :, ::-1]), output, self.metadata, self.task,
                                  self.threshold)
        names = names_in(output, self.task, self.metadata, self.threshold) if legend_names is None else legend_names
        return with_legend(drawing, names, self.metadata)


def run_images(demo, paths, output_dir):
    written, used = [], set()
    for path in tqdm(paths, desc="demo", unit="image", mininterval=1.0):
        drawing = demo(read_image(path, format="BGR"), path)
        stem = os.path.splitext(os.path.basename(path))[0]
        name = stem if stem not in used else f"{stem}_{len(written)}"
        used.add(name)
        written.append(os.path.join(output_dir, name + ".png"))
        cv2.imwrite(written[-1], drawing[:, :, ::-1])
    return written


def run_video(demo, path, output_dir):
    unreadable = InputValueError(f"--video-input '{path}' could not be read as a video: give a video file (mp4, avi, ...)")
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise unreadable
    fps, frames = video.get(cv2.CAP_PROP_FPS) or 25.0, int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer, index = None, 0
    every_class = list(demo.metadata.stuff_classes)  # one legend for every frame: a constant frame size
    with tqdm(total=frames or None, desc="demo", unit="frame", mininterval=1.0) as progress:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            drawing = demo(frame, f"{path}#frame={index}", legend_names=every_class)[:, :, ::-1]
            if writer is None:
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (drawing.shape[1], drawing.shape[0]))
            writer.write(np.ascontiguousarray(drawing))
            index += 1
            progress.update(1)
    video.release()
    if writer is None:  # opened, but not one frame could be read
        raise unreadable
    writer.release()
    return [out_path]


def check_backend(args):
    """The arguments a backend needs and those it cannot use, before anything is read."""
    if args.backend == "pytorch":
        if args.exported:
            raise InputValueError("--exported is run by --backend onnxruntime or torchscript; with --backend "
                                  "pytorch give --config-file and --weights")
        if not (args.config_file and args.weights):
            raise InputValueError("--backend pytorch needs --config-file and --weights (or run an exported file: "
                                  "--backend onnxruntime --exported FILE)")
        return
    if not args.exported:
        raise InputValueError(f"--backend {args.backend} needs --exported FILE (written by tools/export_model.py)")
    vocabulary = [f for f, v in (("--vocabulary", args.vocabulary is not None),
                                 ("--extra-vocabulary", args.extra_vocabulary), ("--stuff", args.stuff)) if v]
    if vocabulary:
        raise InputValueError(f"{vocabulary[0]} with --backend {args.backend}: an exported file scores the classes "
                              "chosen at export (tools/export_model.py --vocabulary ...); name classes here with "
                              "--backend pytorch")
    model = [f for f, v in (("--config-file", args.config_file), ("--weights", args.weights),
                            ("--opts", args.opts)) if v]
    if model:
        raise InputValueError(f"{model[0]} with --backend {args.backend}: the exported file holds the model "
                              "(config and weights are fixed at export); drop it or use --backend pytorch")


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="zsi_d2")
    check_backend(args)
    if bool(args.input) == bool(args.video_input):
        raise InputValueError("Give either --input (images, globs or folders) or --video-input (a video file)")
    if args.video_input and not os.path.isfile(args.video_input):
        raise InputFileNotFoundError(f"--video-input '{args.video_input}' does not exist: give a video file")
    for given in (args.vocabulary, args.extra_vocabulary or None):
        if given is not None:
            vocabulary_entries(given)  # an empty one: before any model is built
    if args.threads and args.backend != "onnxruntime":
        torch.set_num_threads(args.threads)
    cfg = command_config(args.config_file, args.opts, args.weights) if args.backend == "pytorch" else None
    paths = expand_inputs(args.input) if args.input else []
    demo = Demo(args, cfg)
    os.makedirs(args.output, exist_ok=True)
    with torch.no_grad():
        written = run_video(demo, args.video_input, args.output) if args.video_input else \
            run_images(demo, paths, args.output)
    images_json, results_json = write_coco_predictions(args.output, demo.images, demo.metadata, demo.results)
    logger.info(f"{demo.task}: {len(demo.images)} images, {len(demo.results)} predictions; pictures: "
                f"{written[0]}{' ...' if len(written) > 1 else ''}; COCO JSON: {images_json}, {results_json}")
    return written, images_json, results_json


def cli(argv=None):
    with exit_on_input_error():  # a missing file, an unreadable image, an empty vocabulary: one line, exit 2
        return main(argv)


if __name__ == "__main__":
    cli()
