#!/usr/bin/env python
"""Train + evaluate configs over several seeds, N runs at a time, then print the summary table.

    python tools/run_seeds.py configs/zs_shapes/projection_mask_rcnn.yaml \
        configs/zsi/zs_shapes/zsi_mask_rcnn.yaml --seeds 0 1 2 --parallel 2 --root output/runs

Each run goes to ROOT/<config name>_s<seed>/ and is skipped when it already has results, so an
interrupted sweep resumes. With --parallel 2 on 2 cores each run gets one thread: two single-thread
runs finish sooner than two 2-thread runs in a row. Extra `KEY VALUE` pairs after `--` go to every run.
"""
import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_name(config):
    return os.path.splitext(os.path.basename(config))[0]


def check_configs(configs):
    """Every config exists and names its runs uniquely (ROOT/<config name>_s<seed>): two configs
    of one name would share run folders, and the second would be skipped as done."""
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        raise SystemExit(f"run_seeds: config file(s) not found: {missing}")
    by_name = {}
    for c in configs:
        by_name.setdefault(config_name(c), []).append(c)
    clashes = {n: cs for n, cs in by_name.items() if len(cs) > 1}
    if clashes:
        raise SystemExit(f"run_seeds: configs {clashes} share a file name, so their runs would share folders: "
                         "run them in separate calls with different --root")


def run_one(config, seed, root, opts, threads):
    name = f"{config_name(config)}_s{seed}"
    out = os.path.join(root, name)
    if os.path.isfile(os.path.join(out, "zero_shot_results.json")):
        return name, "done before", 0.0
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config,
           "SEED", str(seed), "OUTPUT_DIR", out, *opts]
    start = time.time()
    with open(os.path.join(out, "run.log"), "w") as log:
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    status = "ok" if rc == 0 else f"FAILED (exit {rc}, see {out}/run.log)"
    return name, status, time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("configs", nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--root", default="output/runs")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides for every run")
    args = p.parse_args(argv)
    check_configs(args.configs)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = [(c, s) for c in args.configs for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, c, s, args.root, args.opts, threads) for c, s in jobs]
        failed = False
        for f in futures:
            name, status, seconds = f.result()
            print(f"{name}: {status} ({seconds / 60:.1f} min)", flush=True)
            failed |= status.startswith("FAILED")
    groups = [f"{config_name(c)}={os.path.join(args.root, config_name(c))}_s*" for c in args.configs]
    subprocess.call([sys.executable, os.path.join(REPO, "tools", "summarize_runs.py"), *groups])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
