"""`launch` that also runs distributed jobs on machines without a GPU.

Why: detectron2 0.6's launcher asserts CUDA and uses NCCL, so on a CPU-only machine distributed
training (and its tests) could not run at all. Here, when CUDA is available we call detectron2's
own `launch`; otherwise each process joins a gloo process group, detectron2's `comm` is set up
exactly as detectron2 does it, and `create_ddp_model` is told that CPU modules take no device ids
(both through detectron2 0.6 private API, gathered in zsi_d2.compat).
"""
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..compat import find_free_port, let_ddp_wrap_cpu_modules, set_local_process_group
from ..errors import EXIT_INPUT_ERROR, InputValueError, exit_on_input_error

__all__ = ["launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT):
    """Same signature and meaning as detectron2.engine.launch; `num_gpus_per_machine` counts CPU
    processes when there is no GPU."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available():
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise InputValueError("--dist-url must name the first machine for multi-machine CPU jobs: pass "
                                  "--dist-url tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    logging.getLogger(__name__).info(f"No GPU: running {num_gpus_per_machine} CPU processes over gloo")
    try:
        mp.spawn(
            _cpu_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
            daemon=False,
        )
    except mp.ProcessExitedException as e:
        if e.exit_code == EXIT_INPUT_ERROR:  # the worker already printed its one line
            raise SystemExit(EXIT_INPUT_ERROR) from None
        raise


def _cpu_worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
    )
    for i in range(world_size // procs_per_machine):
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine_rank:
            set_local_process_group(group)
    let_ddp_wrap_cpu_modules()
    torch.set_num_threads(max(1, torch.get_num_threads() // procs_per_machine))
    comm.synchronize()
    with exit_on_input_error():  # one line, as in a single process, instead of a spawn traceback
        main_func(*args)

