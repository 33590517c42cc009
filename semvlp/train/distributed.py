"""Process-group set-up for every way of launching: `deepspeed`, `torchrun`, or one plain process, and the
end of a run on every rank when one rank fails.

The launchers set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; a plain process gets a one-rank group
on a free local port. Without a GPU the backend is gloo (DeepSpeed's CPU accelerator would pick oneCCL).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_FAILURE_KEY, _SEEN_KEY, _DONE_KEY = "semvlp/failure", "semvlp/failure_seen", "semvlp/failure_done"


def setup_logging(is_main: bool | None = None) -> None:
    """INFO lines of semvlp on the main rank, warnings elsewhere; DeepSpeed's own INFO lines held back. is_main
    None: rank 0 by the launcher's RANK variable (before the process group exists), a plain process being it."""
    if is_main is None:
        is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


class RankFailedError(RuntimeError):
    """Another rank failed; the message is that rank's error."""


class FailureWatch:
    """Ends every rank when one fails, with that rank's error.

    A rank whose run raises writes its error to the launcher's key-value store (the one the process group met
    at, MASTER_ADDR:MASTER_PORT) and waits up to `notify_s` for the others to read it before it exits. On every
    rank a thread looks for such an error every `poll_s` seconds and ends its process with it: the main thread
    may be blocked in a collective that waits for the failed rank and cannot be interrupted from Python. The
    readers stay until the failing rank is done with the store, which may live in one of them (rank 0). A rank
    that has lost the store (its host, rank 0 or the launcher, has ended) ends too, after `grace_s`.
    """

    def __init__(self, rank: int, world_size: int, poll_s: float = 2.0, notify_s: float = 10.0,
                 grace_s: float = 10.0):
        self.rank, self.world_size = rank, world_size
        self.poll_s, self.notify_s, self.grace_s = poll_s, notify_s, grace_s
        self.address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        self.store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                   timeout=timedelta(seconds=30), wait_for_workers=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="semvlp-failure-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def failure_of_another_rank(self) -> str | None:
        if not self.store.check([_FAILURE_KEY]):
            return None
        failure = self.store.get(_FAILURE_KEY).decode()
        return None if failure.startswith(f"rank {self.rank} ") else failure

    def report(self, err: BaseException) -> str | None:
        """Publishes this rank's error, unless another rank's came first: then returns that one. Waits (at most
        notify_s) until the other ranks have seen it."""
        mine = f"rank {self.rank} failed: {type(err).__name__}: {err}"
        try:
            first = self.store.compare_set(_FAILURE_KEY, "", mine).decode()
            if first != mine:
                return first
            deadline = time.monotonic() + self.notify_s
            while self.store.add(_SEEN_KEY, 0) < self.world_size - 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.store.set(_DONE_KEY, "1")
        except (dist.DistError, RuntimeError):
            pass  # the store has gone with its host; the collectives of the others fail without it
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                failure = self.failure_of_another_rank()
            except (dist.DistError, RuntimeError) as err:
                if self._stop.wait(self.grace_s):
                    return  # the run ended normally meanwhile and its store host left first
                self._end(f"lost the rendezvous store at {self.address} (rank 0 or its launcher has ended): {err}")
            if failure is not None:
                try:
                    self.store.add(_SEEN_KEY, 1)
                    self.store.wait([_DONE_KEY], timedelta(seconds=self.notify_s))
                except (dist.DistError, RuntimeError):
                    pass  # the failing rank has gone meanwhile
                self._end(f"stopping because {failure}")

    def _end(self, message: str) -> None:
        print(f"\n[rank {self.rank}] semvlp: {message}", file=sys.stderr, flush=True)
        os._exit(1)


@contextmanager
def distributed_run() -> Iterator[Distributed]:
    """The process group for a run: joined on entry; left with a barrier when the run succeeds. When the run
    raises on one rank, every rank ends promptly with that error (see FailureWatch): the others raise
    RankFailedError from wherever they are, or exit if they are blocked in a collective."""
    env = init_distributed()
    watch = FailureWatch(env.rank, env.world_size) if env.world_size > 1 else None
    try:
        yield env
    except BaseException as err:
        first = None
        if watch is not None:
            watch.stop()
            first = watch.report(err)
        # Without a barrier: the others may be in another collective or gone. Leaving closes this rank's
        # connections, so a collective that waits for it fails instead of waiting.
        dist.destroy_process_group()
        if first is not None:
            raise RankFailedError(first) from err
        raise
    else:
        dist.barrier()
        if watch is not None:
            watch.stop()
        dist.destroy_process_group()
