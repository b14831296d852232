#!/usr/bin/env python
"""Forward + backward time of multi-scale deformable attention: all levels in one grid_sample call
(`ms_deform_attn`) vs the published per-level loop (`ms_deform_attn_per_level`), in one process.

    python tools/benchmark_deform_attn.py [--threads 1] [--batch 1] [--image 512] [--iters 7]

Shapes are the pixel decoder's encoder self-attention on one `--image` px input: levels at
`--strides` (default 8, 16, 32: 64x64, 32x32, 16x16 for 512 px), every position a query, 8 heads,
4 points, d_model 256. Sampling locations are pixel centres plus offsets of a few pixels, as the
encoder produces them. Each iteration times both variants in alternating order on the same
inputs with a random output gradient; reported: median wall and CPU time of each and the median
per-iteration ratio loop / vectorised (> 1: the vectorised op is faster). Compare ratios, not
absolute times, between machines.
"""
import argparse
import os
import statistics
import time

import torch

from zsi_d2.modeling.mask_former.ms_deform_attn import ms_deform_attn, ms_deform_attn_per_level


def make_inputs(batch, image, strides, heads, points, d_model, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(image // s, image // s) for s in strides]
    S = sum(h * w for h, w in shapes)
    L = len(shapes)
    D = d_model // heads
    value = torch.randn(batch, S, heads, D, generator=g)
    ref = torch.cat(
        [torch.stack(torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")[::-1], -1)
         .view(h * w, 2) for h, w in shapes]
    )  # (S, 2) normalised (x, y) pixel centres
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)  # (L, 2)
    offsets = torch.randn(batch, S, heads, L, points, 2, generator=g) * 2.0
    loc = ref.view(1, S, 1, 1, 1, 2) + offsets / size.view(1, 1, 1, L, 1, 2)
    weights = torch.randn(batch, S, heads, L * points, generator=g).softmax(-1).view(batch, S, heads, L, points)
    grad = torch.randn(batch, S, d_model, generator=g)
    return value, torch.tensor(shapes), loc, weights, grad


def step(fn, value, shapes, loc, weights, grad):
    inputs = [t.detach().requires_grad_() for t in (value, loc, weights)]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(inputs[0], shapes, inputs[1], inputs[2])
    out.backward(grad)
    return time.perf_counter() - w0, time.process_time() - c0, out.detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--image", type=int, default=512)
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--iters", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inputs = make_inputs(args.batch, args.image, args.strides, args.heads, args.points, args.d_model)
    variants = {"vectorised": ms_deform_attn, "per_level": ms_deform_attn_per_level}
    _, _, a = step(ms_deform_attn, *inputs)  # warm-up, and the two agree
    _, _, b = step(ms_deform_attn_per_level, *inputs)
    times = {k: ([], []) for k in variants}
    ratios_wall, ratios_cpu = [], []
    for it in range(args.iters):
        order = list(variants) if it % 2 == 0 else list(variants)[::-1]
        for name in order:
            wall, cpu, _ = step(variants[name], *inputs)
            times[name][0].append(wall)
            times[name][1].append(cpu)
        ratios_wall.append(times["per_level"][0][-1] / times["vectorised"][0][-1])
        ratios_cpu.append(times["per_level"][1][-1] / times["vectorised"][1][-1])

    shapes = [tuple(s) for s in inputs[1].tolist()]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; batch {args.batch}, "
          f"levels {shapes}, {args.heads} heads, {args.points} points, d_model {args.d_model}, "
          f"{sum(h * w for h, w in shapes)} queries; max |vectorised - per_level| = {(a - b).abs().max():.2e}")
    for name, (wall, cpu) in times.items():
        print(f"{name:>10}: forward+backward median {statistics.median(wall) * 1e3:.1f} ms wall, "
              f"{statistics.median(cpu) * 1e3:.1f} ms CPU ({args.iters} iterations)")
    print(f"per_level / vectorised: median ratio {statistics.median(ratios_wall):.2f} (wall), "
          f"{statistics.median(ratios_cpu):.2f} (CPU)")


if __name__ == "__main__":
    main()
