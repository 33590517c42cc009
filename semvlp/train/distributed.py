"""Process-group set-up for every way of launching: `deepspeed`, `torchrun`, or one plain process.

The launchers set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; a plain process gets a one-rank group
on a free local port. Without a GPU the backend is gloo (DeepSpeed's CPU accelerator would pick oneCCL).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> Distributed:
    """Joins (or creates, for a plain process) the process group; returns this rank's place and device."""
    import deepspeed

    if not all(name in os.environ for name in _LAUNCH_VARIABLES):
        if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
            missing = [n for n in _LAUNCH_VARIABLES if n not in os.environ]
            raise ValueError(f"environment: WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set; "
                             "launch with deepspeed or torchrun")
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(_free_port())})
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
        # DeepSpeed's shared-memory all-reduce op serves CPU inference only; marking it unavailable keeps
        # training on gloo and avoids its JIT build (over a minute on two cores) at the first init.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        if "OMP_NUM_THREADS" not in os.environ:
            # Ranks on one machine share its cores (torchrun sets OMP_NUM_THREADS=1; deepspeed does not).
            local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown() -> None:
    """Leaves the process group (gloo may abort at interpreter exit without this)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
