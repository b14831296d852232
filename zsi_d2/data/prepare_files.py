"""File helpers shared by the dataset preparation scripts (COCO, Pascal VOC, ADE20k-Full).

Why: a preparation pass over thousands of label maps must be safe to interrupt and to run twice.
Nothing is ever visible under its final name before it is complete: files are written under a
temporary name and renamed, label-map folders are filled as `<folder>.partial` and renamed when
every file is in (a rerun keeps the files a killed run finished).
"""
import functools
import json
import logging
import multiprocessing
import os
import shutil
import sys
from typing import Callable, List, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .label_maps import pixels_of, remap_labels

__all__ = [
    "PARTIAL_SUFFIX", "tmp_name", "load_json", "write_json", "write_image", "start_folder", "finish_folder",
    "count_files", "parallel_map", "read_label_image", "remap_label_folder", "check_label_files",
    "label_folder_counts",
    "format_summary", "run_preparation",
]

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # suffix of a label-map folder being written
_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}


def tmp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"  # no ".png"/".json" suffix: never globbed as a finished file


def load_json(path: str):
    logger.info("Reading %s", path)
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    tmp = tmp_name(path)
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_image(path: str, array: np.ndarray) -> None:
    """An image or label map (uint8, or uint16 for 16-bit labels), in the format its extension names."""
    tmp = tmp_name(path)
    Image.fromarray(array).save(tmp, format=_FORMATS[os.path.splitext(path)[1].lower()])
    os.replace(tmp, path)


def start_folder(final: str, force: bool) -> str:
    """The folder to write label maps into; keeps a previous partial run's finished files."""
    partial = final + PARTIAL_SUFFIX
    if force and os.path.isdir(partial):
        shutil.rmtree(partial)
    os.makedirs(partial, exist_ok=True)
    return partial


def finish_folder(partial: str, final: str) -> None:
    for name in os.listdir(partial):
        if ".tmp-" in name:  # left by a killed worker
            os.remove(os.path.join(partial, name))
    if os.path.isdir(final):
        old = f"{final}.old-{os.getpid()}"
        os.rename(final, old)
        os.rename(partial, final)
        shutil.rmtree(old)
    else:
        os.rename(partial, final)


def count_files(folder: str, ext: str = ".png") -> int:
    return sum(name.endswith(ext) for name in os.listdir(folder))


def parallel_map(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool) -> List:
    """fn over jobs, in order, with a progress bar; in `workers` processes when > 1."""
    bar = dict(total=len(jobs), desc=desc, disable=not progress, unit="img", dynamic_ncols=True)
    if workers <= 1 or len(jobs) < 2:
        return [fn(job) for job in tqdm(jobs, **bar)]
    with multiprocessing.Pool(workers) as pool:
        return list(tqdm(pool.imap(fn, jobs, chunksize=16), **bar))


def read_label_image(path: str) -> np.ndarray:
    """A label map as stored (palette PNGs give their indices, 16-bit PNG / TIFF their values)."""
    with Image.open(path) as img:
        return np.asarray(img)


def _remap_worker(job, read, lut, legal, flagged, expected):
    source, out = job
    raw = read(source)
    labels = remap_labels(raw, lut, legal, source=source, expected=expected)  # refuses a bad source, also on resume
    if out is not None and not os.path.isfile(out):
        write_image(out, labels)
    return pixels_of(raw, flagged)


def remap_label_folder(jobs: Sequence[Tuple[str, str]], final: str, read: Callable, lut: np.ndarray,
                       legal: np.ndarray, flagged: np.ndarray, expected: str, force: bool, workers: int,
                       progress: bool, desc: str) -> List[int]:
    """Write `lut`-remapped label maps into the folder `final`, atomically and resumably.

    `jobs` = (source label file, output file name); `read` reads a source file (a module-level
    function, so worker processes can receive it). Returns, per job, the number of source pixels
    whose value is flagged in `flagged` (e.g. the unseen classes' values).
    """
    partial = start_folder(final, force)
    worker = functools.partial(_remap_worker, read=read, lut=lut, legal=legal, flagged=flagged, expected=expected)
    counts = parallel_map(worker, [(source, os.path.join(partial, name)) for source, name in jobs], workers, desc,
                          progress)
    finish_folder(partial, final)
    return counts


def check_label_files(sources: Sequence[str], read: Callable, legal: np.ndarray, flagged: np.ndarray,
                      expected: str, workers: int, progress: bool, desc: str) -> List[int]:
    """`remap_label_folder` without writing: label maps used where they are (their values already are
    the prepared ones) are only checked for illegal values; returns the flagged pixels per file."""
    worker = functools.partial(_remap_worker, read=read, lut=np.zeros(len(legal), dtype=np.uint8), legal=legal,
                               flagged=flagged, expected=expected)
    return parallel_map(worker, [(source, None) for source in sources], workers, desc, progress)


def label_folder_counts(per_image: Sequence[int], dropped: bool) -> dict:
    """The summary of one `remap_label_folder` pass whose flagged values are the unseen classes."""
    return {
        "label_maps": len(per_image),
        "images_with_unseen_pixels": int(sum(n > 0 for n in per_image)),
        ("unseen_pixels_set_to_ignore" if dropped else "unseen_pixels"): int(sum(per_image)),
    }


def format_summary(summary: dict) -> str:
    """Human-readable counts of a preparation summary (for the CLIs)."""
    head = (f"{summary['split']} ({summary['kind']}, {summary['seen_classes']} seen / "
            f"{summary['unseen_classes']} unseen)")
    if summary.get("skipped"):
        head += ": already prepared, nothing done (use --force to rebuild)"
    lines = [head]
    for output, counts in summary["counts"].items():
        lines.append(f"  {output}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    lines.append(f"  files in {os.path.dirname(next(iter(summary['outputs'].values())))}")
    return "\n".join(lines)


def run_preparation(prepare: Callable[[], dict], names: dict) -> int:
    """A CLI's preparation of one split: its counts and registered {name: mode}, or `error: ...` on
    stderr and exit status 2 for a known mistake (missing or unreadable input)."""
    try:
        summary = prepare()
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print("  registered as: " + ", ".join(f"{n} ({m})" for n, m in names.items()))
    return 0
