"""demo.py end to end (random tiny models saved to a file, zs_shapes images) and its one-line input errors;
tools/visualize_predictions.py's panoptic and semantic views."""
import os
import shutil
import subprocess
import sys

import cv2
import pytest
import torch
from pycocotools.coco import COCO

from conftest import BASELINE_CONFIG, REPO_ROOT, TINY_MASK_FORMER_OPTS, TINY_OPTS, import_tool, tiny_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.errors import InputError

MASK_FORMER = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
VAL = "zs_shapes_tiny_val_panoptic"
SPNET = os.path.join(REPO_ROOT, "configs/semantic/zs_shapes/spnet.yaml")
TINY_SPNET_OPTS = ["DATASETS.TRAIN", "('zs_shapes_tiny_train_panoptic',)", "DATASETS.TEST", f"('{VAL}',)",
                   "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes", "MODEL.EFFICIENTNET.WEIGHTS", "",
                   "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"]
# split classes (seen, unseen, a distractor nobody labelled) and a training class spelled two ways
# (stuff first: thing ids and category ids differ)
VOCABULARY = ["dark dotted ground", "red circle", "red square, crimson square", "purple circle", "light wavy ground"]
# every query's segment kept, so that a random model's panoptic view is not empty
KEEP_ALL = ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0"]


def _import_demo():
    sys.path.insert(0, REPO_ROOT)
    try:
        import demo
    finally:
        sys.path.pop(0)
    return demo


def _save(cfg, folder, name):
    torch.manual_seed(0)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, str(folder), purpose="train").save(name)
    return str(folder / f"{name}.pth")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Randomly initialised tiny models, saved as train_net.py saves them."""
    from zsi_d2.config import get_zsi_d2_cfg

    folder = tmp_path_factory.mktemp("demo_weights")
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(MASK_FORMER)
    cfg.merge_from_list(TINY_MASK_FORMER_OPTS)
    semantic = get_zsi_d2_cfg()
    semantic.merge_from_file(SPNET)
    semantic.merge_from_list(TINY_SPNET_OPTS)
    return {"mask_former": _save(cfg, folder, "mask_former"), "rcnn": _save(tiny_cfg(), folder, "rcnn"),
            "spnet": _save(semantic, folder, "spnet")}


@pytest.fixture(scope="module")
def images():
    return [d["file_name"] for d in DatasetCatalog.get(VAL)[:2]]


def _mask_former_args(weights, output, *args, opts=()):
    return ["--config-file", MASK_FORMER, "--weights", weights["mask_former"], "--output", str(output), *args,
            "--opts", *TINY_MASK_FORMER_OPTS, *opts]


def test_demo_draws_and_writes_coco_json_that_pycocotools_loads(weights, images, tmp_path):
    demo = _import_demo()
    written, images_json, results_json = demo.main(_mask_former_args(
        weights, tmp_path, "--input", *images, "--vocabulary", *VOCABULARY, "--task", "instance",
        "--confidence-threshold", "0"))
    assert [os.path.basename(p) for p in written] == [os.path.basename(p) for p in images]
    for path, image in zip(written, images):
        drawn, original = cv2.imread(path), cv2.imread(image)
        assert drawn is not None and drawn.shape[1] == 3 * original.shape[1] and drawn.shape[0] > 3 * original.shape[0]
    coco = COCO(images_json)
    results = coco.loadRes(results_json)
    assert sorted(coco.getImgIds()) == [1, 2] and len(results.getAnnIds()) > 0
    categories = {c["name"]: c for c in coco.loadCats(coco.getCatIds())}
    # the training class keeps its own name; only it counts as seen; the ground is stuff
    assert list(categories) == ["dark dotted ground", "red circle", "red square", "purple circle", "light wavy ground"]
    assert [n for n, c in categories.items() if c["seen"]] == ["red square", "light wavy ground"]
    assert not categories["dark dotted ground"]["isthing"] and categories["purple circle"]["isthing"]
    assert {results.anns[i]["category_id"] for i in results.getAnnIds()} <= {categories[n]["id"] for n in
                                                                            ("red circle", "red square", "purple circle")}


def test_demo_panoptic_and_semantic_views_and_a_folder_input(weights, images, tmp_path):
    demo = _import_demo()
    folder = tmp_path / "images"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder)
    (folder / "notes.txt").write_text("not an image: skipped")
    for task in ("panoptic", "semantic"):
        written, images_json, results_json = demo.main(_mask_former_args(
            weights, tmp_path / task, "--input", str(folder), "--vocabulary", *VOCABULARY, "--task", task,
            opts=KEEP_ALL))
        assert len(written) == len(images) and all(os.path.isfile(p) for p in written)
        results = COCO(images_json).loadRes(results_json)
        assert all("segmentation" in a and a["area"] > 0 for a in results.anns.values())


def test_demo_on_the_rcnn_baseline_with_the_test_set_by_default(weights, images, tmp_path):
    """No --vocabulary: the config's test set (seen + unseen); an R-CNN draws instances."""
    demo = _import_demo()
    written, images_json, _ = demo.main(["--config-file", BASELINE_CONFIG, "--weights", weights["rcnn"],
                                         "--input", images[0], "--output", str(tmp_path), "--opts", *TINY_OPTS])
    meta = MetadataCatalog.get("zs_shapes_tiny_val")
    assert os.path.isfile(written[0])
    names = [c["name"] for c in COCO(images_json).dataset["categories"]]
    assert names == [n for n in meta.thing_classes if n in set(meta.seen_classes) | set(meta.unseen_classes)]


def test_demo_on_a_pixel_level_model_draws_the_semantic_view(weights, images, tmp_path):
    """SPNet-style projection (ZeroShotSemanticSegmentor): semantic is its one view, any names; a task it
    lacks is one line."""
    demo = _import_demo()
    args = ["--config-file", SPNET, "--weights", weights["spnet"], "--input", *images, "--output", str(tmp_path),
            "--vocabulary", "red circle", "purple circle", "light wavy ground", "--opts", *TINY_SPNET_OPTS]
    written, images_json, _ = demo.main(args)
    assert len(written) == len(images) and all(os.path.isfile(p) for p in written)
    assert [c["name"] for c in COCO(images_json).dataset["categories"]] == ["red circle", "purple circle",
                                                                           "light wavy ground"]
    with pytest.raises(InputError, match="predicts semantic only; use --task semantic"):
        demo.main([*args[:-len(TINY_SPNET_OPTS) - 1], "--task", "panoptic", "--opts", *TINY_SPNET_OPTS])


def test_extra_vocabulary_adds_names_to_the_test_set(weights, images, tmp_path):
    """--extra-vocabulary: the config's test set and the new names, in that order (make demo's call)."""
    demo = _import_demo()
    _, images_json, _ = demo.main(["--config-file", BASELINE_CONFIG, "--weights", weights["rcnn"],
                                   "--input", images[0], "--output", str(tmp_path),
                                   "--extra-vocabulary", "purple circle", "white cross", "--opts", *TINY_OPTS])
    meta = MetadataCatalog.get("zs_shapes_tiny_val")
    test_set = [n for n in meta.thing_classes if n in set(meta.seen_classes) | set(meta.unseen_classes)]
    categories = COCO(images_json).dataset["categories"]
    assert [c["name"] for c in categories] == test_set + ["purple circle", "white cross"]
    new = [c["name"] for c in categories if not c["seen"]]
    assert new == [n for n in test_set if n in meta.unseen_classes] + ["purple circle", "white cross"]


def test_demo_reads_a_video_frame_by_frame(weights, images, tmp_path):
    demo = _import_demo()
    video = str(tmp_path / "clip.avi")
    frame = cv2.imread(images[0])
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    written, images_json, _ = demo.main(_mask_former_args(weights, tmp_path / "out", "--video-input", video,
                                                          "--vocabulary", *VOCABULARY))
    capture = cv2.VideoCapture(written[0])
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert [i["file_name"] for i in COCO(images_json).dataset["images"]] == [f"{video}#frame={i}" for i in range(3)]


@pytest.fixture
def unreadable(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    return str(path)


@pytest.mark.parametrize("case, expected", [
    ("no embedding", "Vocabulary names without an embedding from source 'attributes'"),
    ("unreadable image", "--input '{unreadable}' is not a readable image"),
    ("empty vocabulary", "Empty vocabulary"),
    ("blank vocabulary", "Empty vocabulary"),
    ("missing weights", "--weights no/such/model.pth does not exist"),
    ("no image matches", "--input 'no/such/*.png' matches no image file"),
    ("task the model lacks", "--task panoptic: ZeroShotRCNN predicts instance only"),
    ("not a video", "--video-input '{unreadable}' could not be read as a video"),
])
def test_each_bad_input_is_a_one_line_input_error(case, expected, weights, images, unreadable, tmp_path):
    """An InputError with a one-line message: demo.py's handler prints it as one line and exits 2
    (the next test runs the command itself)."""
    demo = _import_demo()
    args = {
        "no embedding": _mask_former_args(weights, tmp_path, "--input", images[0], "--vocabulary", "orange hexagon"),
        "unreadable image": _mask_former_args(weights, tmp_path, "--input", images[0], unreadable),
        "empty vocabulary": _mask_former_args(weights, tmp_path, "--input", images[0], "--vocabulary"),
        "blank vocabulary": _mask_former_args(weights, tmp_path, "--input", images[0], "--vocabulary", " "),
        "missing weights": ["--config-file", MASK_FORMER, "--weights", "no/such/model.pth", "--input", images[0],
                            "--output", str(tmp_path)],
        "no image matches": _mask_former_args(weights, tmp_path, "--input", "no/such/*.png"),
        "task the model lacks": ["--config-file", BASELINE_CONFIG, "--weights", weights["rcnn"], "--input", images[0],
                                 "--output", str(tmp_path), "--task", "panoptic", "--opts", *TINY_OPTS],
        "not a video": _mask_former_args(weights, tmp_path, "--video-input", unreadable),
    }[case]
    with pytest.raises(InputError) as info:
        demo.main(args)
    message = str(info.value)
    assert "\n" not in message and message.startswith(expected.format(unreadable=unreadable)), message


def test_the_command_line_exits_2_with_one_line(images, tmp_path):
    """`python demo.py` itself: the error handler is wired at the top level (one line, exit status 2)."""
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "demo.py"), "--config-file", MASK_FORMER,
                           "--weights", str(tmp_path / "none.pth"), "--input", images[0], "--output", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert last == f"ERROR: --weights {tmp_path / 'none.pth'} does not exist: train first (train_net.py writes " \
                   "OUTPUT_DIR/model_final.pth)", proc.stderr


def test_visualize_predictions_draws_every_view_of_a_mask_former(weights, tmp_path):
    """Ground truth (the panoptic PNG), then instances, panoptic and semantic views."""
    visualize_predictions = import_tool("visualize_predictions")
    png = tmp_path / "views.png"
    visualize_predictions.main(["--config-file", MASK_FORMER, "--weights", weights["mask_former"], "--dataset", VAL,
                                "--num", "2", "--output", str(png), *TINY_MASK_FORMER_OPTS])
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] > 4 * 3 * 128 and image.shape[0] > 2 * 3 * 128  # 4 panels, 2 rows


def test_labels_are_kept_inside_the_image():
    """A label detectron2 would put past the image's edges (a region at a corner, a long name) is moved in."""
    import numpy as np
    from detectron2.utils.visualizer import Visualizer

    from zsi_d2.utils.visualizer import keep_labels_inside

    vis = Visualizer(np.zeros((128, 128, 3), np.uint8), scale=3.0)
    for position in [(0, 0), (128, 128), (0, 120), (127, 5)]:
        vis.draw_text("a long class name [unseen] 0.99", position)
    output = keep_labels_inside(vis.output)
    renderer = output.canvas.get_renderer()
    width, height = output.fig.canvas.get_width_height()
    for text in output.ax.texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, box
