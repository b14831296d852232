#!/usr/bin/env python
"""Train step, per-image inference and peak memory of a config, as ratios to a yardstick timed in
the same process.

    python tools/benchmark.py --config-file configs/mask_former/zs_shapes/mask_former_embedding.yaml \
        --threads 1 --iters 8 --warmup 2 --inference-images 16 [--data zs_shapes|random] [--json out.json] \
        [--yardstick configs/zs_shapes/projection_mask_rcnn.yaml] [--yardstick-opts K V ...] [--opts K V ...]

Why ratios: project machines differ by several times in speed and are often busy, so absolute seconds
say little; a yardstick (by default zsi_d2's projection-baseline Mask R-CNN) measured alongside, under
the same load, does. Both models are built with their own config, data mapper
(INPUT.DATASET_MAPPER_NAME) and optimiser (zsi_d2.engine.build_optimizer, gradient clipping as
configured), at the same batch size (--batch). Train steps (forward, backward, optimiser step) are
interleaved, the order alternating every iteration, so load changes fall on both alike; the train
ratio is the median of the per-pair ratios. Inference: model.eval(), no_grad, one image at a time from
DATASETS.TEST[0] (detectron2's DatasetMapper, is_train=False) under that dataset's class set, the two
models again alternating; its headline ratio is config s/image over the yardstick's train step (the
yardstick of ../shared/reference/zero_shot_facts.md section 6).

Peak memory is a process-wide high-water mark (VmHWM, else ru_maxrss; Linux's ru_maxrss survives
fork + exec, so a child's would show the parent's peak): the timing process holds every model, so each
model is also run alone in a child process (`--peak-only`, same steps and images) for a clean
per-model peak (--no-peak-children skips them). --data random replaces the datasets by random images
of the config's INPUT size with random boxes/masks of the model's classes, for configs without data.

--mask2former PATH adds a third model, the published Mask2Former's own code from a local checkout at
the config's architecture (tools/mask2former_reference.py), interleaved with the other two, and
reports the config's train step and inference per image as ratios to the reference's, pair by pair.

--backends eager,torchscript,onnxruntime,onnxruntime-int8 (default: eager, the model itself) also
times the config exported (zsi_d2.export) once per backend into a temporary folder: traced on its
first test image after the train steps (with --weights, on those weights: they are restored before
inference, as the train steps move them), under the test set's class set. Each export is timed per
image in the same interleaved loop as the eager models (same images, the order rotating every image),
as `load_exported(path, threads=--threads)(image)`: the whole output, the in-graph inference plus
what the family finishes outside the graph (R-CNN: detector_postprocess), against `model([{"image":
image}])`. onnxruntime backends take an optimisation level after a colon (`onnxruntime:extended`,
`onnxruntime-int8:extended`; default: all, zsi_d2.export.exported.DEFAULT_OPTIMIZATION). Each backend is reported in s/image, as per-pair ratios to
the config's eager inference and, with --mask2former, to the reference's; its outputs on the timed
images are compared with eager's (zsi_d2.export.compare_outputs), outside the timing.
"""
import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

import zsi_d2  # noqa: F401  (makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.evaluation import inference_context
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.logger import setup_logger

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.engine import ZeroShotTrainer
from zsi_d2.export.exported import DEFAULT_OPTIMIZATION, OPTIMIZATION_LEVELS
from zsi_d2.modeling.class_set import use_class_set

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_step import step  # noqa: E402  (forward + backward + optimiser step, timed)
import mask2former_reference as m2f  # noqa: E402  (imports Mask2Former only when asked to)

logger = logging.getLogger("zsi_d2.benchmark")

DEFAULT_YARDSTICK = "configs/zs_shapes/projection_mask_rcnn.yaml"
SIDES = ("yardstick", "config", "reference")
BACKENDS = ("eager", "torchscript", "onnxruntime", "onnxruntime-int8")
ORT_LEVELS = tuple(OPTIMIZATION_LEVELS)


def parse_backends(text):
    """'eager,onnxruntime,onnxruntime:extended' -> [("eager", None), ("onnxruntime", "all"), ...] (the
    default level: DEFAULT_OPTIMIZATION);
    ValueError (one line) for a name that is not a backend."""
    backends = []
    for item in (t.strip() for t in text.split(",")):
        name, _, level = item.partition(":")
        if name not in BACKENDS:
            raise ValueError(f"--backends: unknown backend {item!r}; choose from {', '.join(BACKENDS)} "
                             "(onnxruntime ones may add :LEVEL, one of " + ", ".join(ORT_LEVELS) + ")")
        if level and (not name.startswith("onnxruntime") or level not in ORT_LEVELS):
            raise ValueError(f"--backends: {item!r}: only onnxruntime backends take a level, one of "
                             f"{', '.join(ORT_LEVELS)}")
        entry = (name, (level or DEFAULT_OPTIMIZATION) if name.startswith("onnxruntime") else None)
        if entry not in backends:
            backends.append(entry)
    return backends


def backend_key(name, level):
    return name if level in (None, DEFAULT_OPTIMIZATION) else f"{name}:{level}"


@dataclass
class Side:
    """One model under test with everything it is timed on (drawn before any timing)."""

    role: str
    label: str
    cfg: object
    model: torch.nn.Module = None
    train_step: object = None  # one iteration on a batch (ZeroShotTrainer.build_train_step)
    train_batches: list = field(default_factory=list)
    test_inputs: list = field(default_factory=list)
    test_name: Optional[str] = None
    has_class_set: bool = True  # zsi_d2 models switch to the test set's classes; the reference cannot
    loaded_state: Optional[dict] = None  # --weights: restored before inference
    train_s: List[float] = field(default_factory=list)
    inference_s: List[float] = field(default_factory=list)


@dataclass
class Backend:
    """The config's model exported for one runtime: `exported(image)` timed beside the eager models."""

    key: str
    name: str
    optimization: Optional[str]
    exported: object = None
    path: str = ""
    export_s: float = 0.0
    file_mib: float = 0.0
    inference_s: List[float] = field(default_factory=list)
    comparisons: list = field(default_factory=list)  # compare_outputs(this, eager) per timed image


def config_label(path):
    """The config file's name; for a run's dumped config.yaml, its folder's."""
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(os.path.dirname(os.path.abspath(path))) if name == "config" else name


def load_cfg(path, opts, batch):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    if batch:
        cfg.SOLVER.IMS_PER_BATCH = batch
    # Batches are drawn before timing: loader worker processes would only add to memory and load.
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    return cfg


def _class_ids(model, cfg):
    class_set = getattr(model, "class_set", None)
    if class_set is not None:
        return torch.as_tensor(class_set.dataset_ids, dtype=torch.long)
    return torch.arange(cfg.MODEL.ROI_HEADS.NUM_CLASSES)


def random_image(size, gen):
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)


def random_train_batches(cfg, class_ids, count, gen):
    """Random images of the training size, 1-4 random boxes each with a filled-box mask, labels drawn
    from the model's training classes (dataset ids, as a mapper would give them)."""
    size = min(min(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN)
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(cfg.SOLVER.IMS_PER_BATCH):
            n = int(torch.randint(1, 5, (1,), generator=gen))
            xy = torch.randint(0, size - 8, (n, 2), generator=gen)
            wh = torch.randint(8, max(9, size // 2), (n, 2), generator=gen)
            boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
            masks = torch.zeros((n, size, size), dtype=torch.bool)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
                m[y0:y1, x0:x1] = True
            instances = Instances((size, size))
            instances.gt_boxes = Boxes(boxes.float())
            instances.gt_classes = class_ids[torch.randint(0, len(class_ids), (n,), generator=gen)]
            instances.gt_masks = BitMasks(masks)
            batch.append({"image": random_image(size, gen), "height": size, "width": size, "instances": instances})
        batches.append(batch)
    return batches


def dataset_train_batches(cfg, count):
    """Batches of DATASETS.TRAIN through the config's own training mapper."""
    loader = iter(build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True)))
    return [next(loader) for _ in range(count)]


def dataset_test_inputs(cfg, count):
    """The first `count` images of DATASETS.TEST[0] (cycled if fewer), as evaluation maps them."""
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    mapper = DatasetMapper(cfg, is_train=False)
    return [mapper(dicts[i % len(dicts)]) for i in range(count)]


def prepare(side, data, steps, images, seed, weights=None):
    """Build model + optimiser (same seed for both sides) and draw all inputs before timing; with
    `weights`, the model is loaded from that checkpoint (its state kept to restore after training)."""
    cfg = side.cfg
    torch.manual_seed(seed)
    side.model = build_model(cfg)
    if weights:
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(side.model).load(weights)
        side.loaded_state = copy.deepcopy(side.model.state_dict())
    side.model.train()
    side.train_step = ZeroShotTrainer.build_train_step(cfg, side.model)
    side.test_name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    if data == "random":
        gen = torch.Generator().manual_seed(seed)
        side.train_batches = random_train_batches(cfg, _class_ids(side.model, cfg), steps, gen)
        size = min(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        side.test_inputs = [{"image": random_image(size, gen), "height": size, "width": size} for _ in range(images)]
    else:
        side.train_batches = dataset_train_batches(cfg, steps)
        side.test_inputs = dataset_test_inputs(cfg, images) if images else []
    return side


def alternate(sides, i):
    """Iteration i's order: the sides rotated by i, so each goes first equally often."""
    k = i % len(sides)
    return sides[k:] + sides[:k]


def time_train(sides, iters, warmup):
    for i in range(warmup + iters):
        for side in alternate(sides, i):
            seconds = step(side.model, side.train_step, side.train_batches[i])
            if i >= warmup:
                side.train_s.append(seconds)
        if i >= warmup and (i - warmup + 1) % 5 == 0:
            logger.info("train: %d/%d timed iterations", i - warmup + 1, iters)


def export_backends(side, backends, folder, threads):
    """The config's model (eval mode, its test set's class set) exported once per backend, traced on
    its first test image; returns [Backend] ("eager" is the model itself: no Backend)."""
    from zsi_d2.export import export_model, load_exported, quantize_onnx

    image = side.test_inputs[0]["image"]
    files, out = {}, []
    for name, level in backends:
        if name == "eager":
            continue
        fmt = "torchscript" if name == "torchscript" else "onnx"
        start = time.perf_counter()
        if fmt not in files:
            files[fmt] = os.path.join(folder, f"model.{'ts' if fmt == 'torchscript' else 'onnx'}")
            export_model(side.model, image, fmt, files[fmt], meta={"config": side.label})
        path = files[fmt]
        if name == "onnxruntime-int8":
            if "int8" not in files:
                files["int8"] = os.path.join(folder, "model.int8.onnx")
                quantize_onnx(files["onnx"], files["int8"])
            path = files["int8"]
        key = backend_key(name, level)
        exported = load_exported(path, threads=threads, optimization=level or DEFAULT_OPTIMIZATION)
        out.append(Backend(key, name, level, exported, path, time.perf_counter() - start,
                           os.path.getsize(path) / 2 ** 20))
        logger.info("backend %s: %s (%.1f MiB), exported and loaded in %.1f s", key, os.path.basename(path),
                    out[-1].file_mib, out[-1].export_s)
    torch.set_num_threads(threads)  # TorchScript's load_exported sets it too: keep every model alike
    return out


def time_inference(sides, images, warmup, backends=(), folder=None, threads=1):
    """Eager sides and the config's exports (`backends`: [(name, level)], exported into `folder`) one
    image at a time, the order of all of them rotating every image. Returns [Backend]."""
    from zsi_d2.export import compare_outputs

    config = next((s for s in sides if s.role == "config"), None)
    exports = []
    with contextlib.ExitStack() as stack:
        for side in sides:
            stack.enter_context(inference_context(side.model))
            if side.test_name and side.has_class_set:
                stack.enter_context(use_class_set(side.model, side.test_name))
        stack.enter_context(torch.no_grad())
        if config is not None and any(name != "eager" for name, _ in backends):
            exports = export_backends(config, backends, folder, threads)
        runners = [(side, (lambda s: lambda x: s.model([x])[0])(side)) for side in sides]
        runners += [(b, (lambda b: lambda x: b.exported(x["image"]))(b)) for b in exports]
        for i in range(warmup + images):
            outputs = {}
            for who, run in alternate(runners, i):
                start = time.perf_counter()
                output = run(who.test_inputs[i] if isinstance(who, Side) else config.test_inputs[i])
                if i >= warmup:
                    who.inference_s.append(time.perf_counter() - start)
                    if exports and (who is config or isinstance(who, Backend)):
                        outputs[id(who)] = output
            for b in exports if i >= warmup else ():  # after the image's round, outside the timing
                b.comparisons.append(compare_outputs(outputs[id(b)], outputs[id(config)]))
    return exports


def backend_records(backends, exports, config, reference=None):
    """Each backend's times, ratios per pair to the config's eager inference (and to the reference's),
    and how far its outputs are from eager's on the timed images."""
    by_key = {b.key: b for b in exports}
    records = {}
    for name, level in backends:
        key = backend_key(name, level)
        if name == "eager":
            times, rec = config.inference_s, {"format": "eager (the model itself)"}
        else:
            b = by_key[key]
            times = b.inference_s
            comparisons = b.comparisons
            rec = {"format": b.exported.format, "file": os.path.basename(b.path), "file_mib": b.file_mib,
                   "export_and_load_s": b.export_s,
                   "max_abs_diff": max((c["max_abs_diff"] for c in comparisons), default=None),
                   "max_scaled_diff": max((c["max_scaled_diff"] for c in comparisons), default=None),
                   "images_discrete_equal": sum(c["discrete_equal"] for c in comparisons),
                   "images_compared": len(comparisons),
                   "mask_pixels_differing": sum(c["mask_pixels_differing"] for c in comparisons),
                   "first_difference": next((c["first_difference"] for c in comparisons
                                             if c["first_difference"]), None)}
        rec.update({"backend": name, "optimization": level, "inference_s": times, "inference": summary(times)})
        pairs = [t / e for t, e in zip(times, config.inference_s)]
        rec["vs_config_eager_pairs"], rec["vs_config_eager"] = pairs, summary(pairs)
        if reference is not None:
            pairs = [t / r for t, r in zip(times, reference.inference_s)]
            rec["vs_reference_eager_pairs"], rec["vs_reference_eager"] = pairs, summary(pairs)
        records[key] = rec
    return records


def summary(values):
    """median, first and third quartile (all three the value itself for a single sample)."""
    if not values:
        return {"median": None, "q1": None, "q3": None}
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def ru_maxrss_mib():
    """ru_maxrss of this process (KiB on Linux): a high-water mark, not current use. Linux carries it
    over fork + exec, so in a child it is at least the parent's peak at the fork."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mib():
    """This process's own peak RSS: VmHWM of its address space (fresh at exec, so a child's is its
    own), else ru_maxrss."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    return ru_maxrss_mib()


def cpu_name():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(threads):
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "node": platform.node(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "requested_threads": threads, "load_avg_start": list(os.getloadavg())}


def side_record(side):
    params = sum(p.numel() for p in side.model.parameters())
    trainable = sum(p.numel() for p in side.model.parameters() if p.requires_grad)
    return {"label": side.label, "meta_architecture": side.cfg.MODEL.META_ARCHITECTURE,
            "mapper": side.cfg.INPUT.get("DATASET_MAPPER_NAME", "") or "DatasetMapper",
            "train_dataset": list(side.cfg.DATASETS.TRAIN), "test_dataset": side.test_name,
            "params": params, "trainable_params": trainable, "batch": side.cfg.SOLVER.IMS_PER_BATCH,
            "train_s": side.train_s, "train": summary(side.train_s),
            "inference_s": side.inference_s, "inference": summary(side.inference_s)}


def ratios(yard, conf):
    """The same-process comparisons: per interleaved pair, and inference per image over the
    yardstick's median train step."""
    train_pairs = [c / y for c, y in zip(conf["train_s"], yard["train_s"])]
    infer_pairs = [c / y for c, y in zip(conf["inference_s"], yard["inference_s"])]
    y_train = yard["train"]["median"]
    per_train = {k: (v / y_train if v is not None else None) for k, v in conf["inference"].items()}
    return {"train_pairs": train_pairs, "train": summary(train_pairs),
            "inference_pairs": infer_pairs, "inference_vs_yardstick_inference": summary(infer_pairs),
            "inference_vs_yardstick_train": per_train}


def run_peak_child(role, argv):
    """This tool again, one model alone: its high-water mark is that model's own peak."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peak.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--peak-only", role, "--peak-json", out, *argv]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark: --peak-only {role} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
        with open(out) as f:
            return json.load(f)


def _fmt(s, digits=3):
    return "-" if s["median"] is None else f"{s['median']:.{digits}f} ({s['q1']:.{digits}f}-{s['q3']:.{digits}f})"


def format_table(result):
    m, c, r = result["machine"], result["config"], result["ratios"]
    lines = [
        f"machine: {m['cpu']} ({m['cpu_count']} CPUs), torch {m['torch']}, {m['torch_threads']} thread(s); "
        f"load average {m['load_avg_start'][0]:.2f} at start, {m['load_avg_end'][0]:.2f} at end",
        f"batch {c['batch']}, {result['iters']} interleaved train steps after {result['warmup']} warm-up, "
        f"{result['inference_images']} inference images (batch 1), data: {result['data']}; median (IQR)",
        f"{'':<10} {'model':<28} {'params':>8} {'train s/step':>22} {'inference s/image':>22} {'peak RSS MiB':>13}",
    ]
    for role, s in ((role, result[role]) for role in SIDES if role in result):
        peak = result["peak_rss_mib"].get(role)
        lines.append(f"{role:<10} {s['label'][:28]:<28} {s['params'] / 1e6:>7.2f}M {_fmt(s['train']):>22} "
                     f"{_fmt(s['inference']):>22} {('-' if peak is None else f'{peak:.0f}'):>13}")
    lines += [
        f"config train step / yardstick train step (per pair):   {_fmt(r['train'])}",
        f"config inference per image / yardstick train step:     {_fmt(r['inference_vs_yardstick_train'])}",
        f"config inference / yardstick inference (per pair):     {_fmt(r['inference_vs_yardstick_inference'])}",
    ]
    if "reference" in result:
        rr, rc = result["ratios_reference"], result["ratios_config_to_reference"]
        lines += [
            f"reference train step / yardstick train step (per pair): {_fmt(rr['train'])}",
            f"reference inference per image / yardstick train step:  {_fmt(rr['inference_vs_yardstick_train'])}",
            f"config train step / reference train step (per pair):   {_fmt(rc['train'])}",
            f"config inference / reference inference (per pair):     {_fmt(rc['inference_vs_yardstick_inference'])}",
        ]
    if result.get("backends"):
        lines.append(f"the config's inference per backend ({result['threads']} thread(s); per-pair ratios to eager "
                     "inference; outputs vs eager on the timed images):")
        lines.append(f"  {'backend':<24} {'s/image':>22} {'/ config eager':>22} {'/ reference eager':>22} "
                     f"{'max|diff|':>9} {'discrete':>9}")
        for key, b in result["backends"].items():
            diff = b.get("max_abs_diff")
            equal = (f"{b['images_discrete_equal']}/{b['images_compared']}" if "images_compared" in b else "-")
            lines.append(f"  {key:<24} {_fmt(b['inference'], 4):>22} {_fmt(b['vs_config_eager']):>22} "
                         f"{(_fmt(b['vs_reference_eager']) if 'vs_reference_eager' in b else '-'):>22} "
                         f"{('-' if diff is None else f'{diff:.1e}'):>9} {equal:>9}")
    lines += [
        f"peak RSS = process high-water mark (VmHWM): per model from a child process running it alone (above); "
        f"the timing process, all models: {result['peak_rss_mib']['timing_process']:.0f} MiB; "
        f"imports alone: {result['peak_rss_mib'].get('after_imports') or float('nan'):.0f} MiB",
    ]
    return "\n".join(lines)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the config under test")
    parser.add_argument("--yardstick", default=DEFAULT_YARDSTICK, help="the config everything is a ratio to")
    parser.add_argument("--batch", type=int, default=4, help="SOLVER.IMS_PER_BATCH of both (0: each its own)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--iters", type=int, default=20, help="timed train steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first train steps / inference images")
    parser.add_argument("--inference-images", type=int, default=32, help="timed inference images per model")
    parser.add_argument("--data", choices=("zs_shapes", "random"), default="zs_shapes",
                        help="the configs' datasets, or random images and targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the full result (every timing) here")
    parser.add_argument("--no-peak-children", action="store_true", help="skip the per-model peak-RSS processes")
    parser.add_argument("--mask2former", metavar="PATH",
                        help="a local facebookresearch/Mask2Former checkout: also time its own model at the config's "
                             "architecture (the reference), interleaved with the other two")
    parser.add_argument("--backends", default="eager",
                        help="comma-separated: the config's inference also timed exported, for each of "
                             f"{', '.join(BACKENDS)} (onnxruntime ones may add :LEVEL, e.g. onnxruntime:all)")
    parser.add_argument("--weights", help="load the config's model from this checkpoint (e.g. model_final.pth); "
                                          "restored after the train steps, before inference and export")
    parser.add_argument("--peak-only", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--peak-json", help=argparse.SUPPRESS)
    parser.add_argument("--yardstick-opts", nargs="*", default=[], help="KEY VALUE pairs for the yardstick")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs for the config")
    return parser


def reference_side(root, cfg):
    """The published Mask2Former at `cfg`'s architecture (it has no class set to switch)."""
    commit = m2f.mask2former_commit(root)
    return Side("reference", f"Mask2Former {commit}".strip(), m2f.reference_cfg(cfg, root), has_class_set=False)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        backends = parse_backends(args.backends)
    except ValueError as e:
        parser.error(str(e))
    if args.weights and not os.path.isfile(args.weights):
        parser.error(f"--weights {args.weights}: no such file")
    if args.mask2former:
        try:
            m2f.import_mask2former(args.mask2former)
        except FileNotFoundError as e:
            parser.error(str(e))
    setup_logger()
    setup_logger(name="zsi_d2")
    torch.set_num_threads(args.threads)
    steps, images = args.warmup + args.iters, (args.warmup + args.inference_images if args.inference_images else 0)
    sides = [Side("yardstick", config_label(args.yardstick), load_cfg(args.yardstick, args.yardstick_opts, args.batch)),
             Side("config", config_label(args.config_file),
                  load_cfg(args.config_file, args.opts, args.batch))]
    if args.mask2former:
        sides.append(reference_side(args.mask2former, sides[1].cfg))
    if args.peak_only:
        at_start = peak_rss_mib()  # imports only (torch alone is ~0.5 GiB): the floor under every peak
        side = prepare(next(s for s in sides if s.role == args.peak_only), args.data, steps, images, args.seed,
                       args.weights if args.peak_only == "config" else None)
        time_train([side], args.iters, args.warmup)
        after_train = peak_rss_mib()
        if images:
            if side.loaded_state is not None:
                side.model.load_state_dict(side.loaded_state)
            time_inference([side], args.inference_images, args.warmup)
        with open(args.peak_json, "w") as f:
            json.dump({"role": side.role, "peak_rss_mib": peak_rss_mib(), "peak_rss_mib_after_train": after_train,
                       "peak_rss_mib_after_imports": at_start, "ru_maxrss_mib": ru_maxrss_mib()}, f)
        return None

    machine = machine_info(args.threads)
    logger.info("benchmark on %s (%s CPUs), torch %s, %d thread(s), load average %s", machine["cpu"],
                machine["cpu_count"], machine["torch"], machine["torch_threads"], machine["load_avg_start"])
    for side in sides:
        prepare(side, args.data, steps, images, args.seed, args.weights if side.role == "config" else None)
        logger.info("%s: %s (%s), %.2fM parameters", side.role, side.label, side.cfg.MODEL.META_ARCHITECTURE,
                    sum(p.numel() for p in side.model.parameters()) / 1e6)
    time_train(sides, args.iters, args.warmup)
    exports = []
    with tempfile.TemporaryDirectory(prefix="zsi_d2_benchmark_") as folder:
        if images:
            for side in sides:
                if side.loaded_state is not None:
                    side.model.load_state_dict(side.loaded_state)
            exports = time_inference(sides, args.inference_images, args.warmup, backends, folder, args.threads)
        if any(name != "eager" for name, _ in backends) and not images:
            logger.warning("--backends: --inference-images 0, nothing timed")
    machine["load_avg_end"] = list(os.getloadavg())
    records = {side.role: side_record(side) for side in sides}
    result = {"machine": machine, "batch": args.batch, "iters": args.iters, "warmup": args.warmup,
              "inference_images": args.inference_images, "data": args.data, **records,
              "ratios": ratios(records["yardstick"], records["config"]),
              "peak_rss_mib": {"timing_process": peak_rss_mib(), "timing_process_ru_maxrss": ru_maxrss_mib(),
                               **{side.role: None for side in sides}},
              "peak_rss_note": "process high-water marks (VmHWM; ru_maxrss where there is no /proc): timing_process "
                               "holds every model; each also ran alone in a child process"}
    if any(name != "eager" for name, _ in backends) or len(backends) > 1:
        result["threads"] = args.threads
        result["weights"] = args.weights
        result["backends"] = backend_records(backends, exports, next(s for s in sides if s.role == "config"),
                                             next((s for s in sides if s.role == "reference"), None))
    if "reference" in records:
        result["ratios_reference"] = ratios(records["yardstick"], records["reference"])
        result["ratios_config_to_reference"] = ratios(records["reference"], records["config"])
    if not args.no_peak_children:
        roles = [side.role for side in sides]
        del sides  # the children run after timing, one at a time, so they never compete with it
        for role in roles:
            child = run_peak_child(role, argv)
            result["peak_rss_mib"][role] = child["peak_rss_mib"]
            result["peak_rss_mib"][f"{role}_after_train"] = child["peak_rss_mib_after_train"]
            result["peak_rss_mib"]["after_imports"] = child["peak_rss_mib_after_imports"]
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
