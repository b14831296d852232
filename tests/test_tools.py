"""tools/summarize_runs.py and tools/run_seeds.py."""
import json
import os
import sys

from conftest import REPO_ROOT
from test_train_net import CONFIG, TINY, trained  # noqa: F401  (the module-scoped tiny run)


def _tool(name):
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_summarize_runs_reports_mean_and_minutes(trained, capsys):
    out, _ = trained
    _tool("summarize_runs").main([f"tiny={out}"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert len(row) == 1 and row[0].count("|") == 12  # 11 cells: label, seeds, 8 metrics, minutes


def test_summarize_runs_confusion_column_matches_the_cli(trained, capsys):
    out, _ = trained
    _tool("summarize_runs").main([f"tiny={out}", "--confusion"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")][0]
    from detectron2.data import MetadataCatalog
    from zsi_d2.evaluation.__main__ import main as evaluation_cli

    gt = MetadataCatalog.get("zs_shapes_tiny_val").json_file
    results = out / "inference" / "zs_shapes_tiny_val" / "coco_instances_results.json"
    report = out / "confusion.json"
    assert evaluation_cli(["confusion", "--gt", gt, "--predictions", str(results), "--split", "zs_shapes",
                           "--json", str(report)]) == 0
    expected = json.loads(report.read_text())["summary"]["unseen/as_seen"]
    assert row.split("|")[11].strip() == f"{expected:.1f}"


def test_run_seeds_trains_each_seed_once_and_resumes(tmp_path, capsys):
    run_seeds = _tool("run_seeds")
    args = [CONFIG, "--seeds", "3", "--root", str(tmp_path), "--opts", *TINY, "SOLVER.MAX_ITER", "2"]
    assert run_seeds.main(args) == 0
    assert (tmp_path / "projection_mask_rcnn_s3" / "zero_shot_results.json").is_file()
    assert run_seeds.main(args) == 0
    assert "done before" in capsys.readouterr().out
