"""A rank that fails ends every rank: each exits non-zero within a bound, with the failing rank's error.

Each rank runs as its own process (the environment a launcher gives it), so each one's exit code and output are
seen; the fault is injected by a small script that wraps a function of the loop on one rank only."""

import subprocess
import sys
import time

import pytest
import torch.distributed as dist

from semvlp.train.distributed import FailureWatch

from pretrain_runs import REPO, deepspeed_config, environment, free_port, pretrain_args, tiny_config

BOUND_S = 60


def _script(tmp_path, rank: int, where: str):
    """A `semvlp` entry point whose `where` (train_step at step 2, or set_up) raises on one rank."""
    path = tmp_path / "faulty_semvlp.py"
    path.write_text(f'''import sys
import time
from pathlib import Path

import semvlp.train.loop as loop
from semvlp.cli import main

RANK, WHERE, MARK = {rank}, {where!r}, Path({str(tmp_path / "fault_time")!r})


def fail(what):
    MARK.write_text(str(time.time()))
    raise ValueError(f"injected fault on rank {{RANK}} in {{what}}")


if WHERE == "train_step":
    step_of = loop.train_step

    def train_step(run, step):
        if run.env.rank == RANK and step == 2:
            fail("step 3")
        return step_of(run, step)

    loop.train_step = train_step
else:
    set_up = loop.set_up

    def faulty_set_up(options, env):
        if env.rank == RANK:
            fail("set-up")
        return set_up(options, env)

    loop.set_up = faulty_set_up
sys.exit(main(sys.argv[1:]))
''')
    return path


def _launch_ranks(script, args, logs, world_size=2):
    """One process per rank with the environment a launcher sets; each one's output goes to logs[rank]."""
    port = free_port()
    processes = []
    for rank in range(world_size):
        env = environment()
        env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        with open(logs[rank], "w") as log:
            processes.append(subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
    return processes


@pytest.mark.slow
# Rank 1 in a step (rank 0 waits in a collective of that step); rank 0, which hosts the rendezvous store, in the
# set-up (rank 1 waits in the engine's first broadcast).
@pytest.mark.parametrize("rank,where", [(1, "train_step"), (0, "set_up")])
def test_a_failing_rank_ends_every_rank_with_its_error(tmp_path, rank, where):
    args = pretrain_args("synthetic", tiny_config(tmp_path), deepspeed_config(tmp_path, "zero2_fp32"),
                         tmp_path / "out", 6, 1, "--synthetic-scenes", "40")
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    processes = _launch_ranks(_script(tmp_path, rank, where), args, logs)
    ended = {}
    deadline = time.time() + 240
    try:
        while len(ended) < len(processes) and time.time() < deadline:
            for r, p in enumerate(processes):
                if r not in ended and p.poll() is not None:
                    ended[r] = time.time()
            time.sleep(0.1)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
    outputs = [log.read_text() for log in logs]
    assert (tmp_path / "fault_time").is_file(), f"no fault injected:\n{outputs[0][-3000:]}\n{outputs[1][-3000:]}"
    fault = float((tmp_path / "fault_time").read_text())
    for r, p in enumerate(processes):
        assert r in ended, f"rank {r} still running {time.time() - fault:.0f} s after the fault:\n{outputs[r][-3000:]}"
        assert p.returncode != 0, outputs[r][-3000:]
        assert ended[r] - fault <= BOUND_S, (r, ended[r] - fault)
        # The failing rank's traceback, and on the other the same error, passed on.
        expected = "injected fault on rank" if r == rank else f"rank {rank} failed: ValueError: injected fault"
        assert expected in outputs[r], outputs[r][-3000:]


def test_the_first_failure_is_the_one_every_rank_reports(monkeypatch):
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    # Watch threads that never poll: one that found a failure would end this process.
    first, second = (FailureWatch(rank, 2, poll_s=3600, notify_s=0.2) for rank in (0, 1))
    try:
        assert second.failure_of_another_rank() is None
        assert first.report(ValueError("features.h5: record 7: NaN features")) is None  # published: it came first
        expected = "rank 0 failed: ValueError: features.h5: record 7: NaN features"
        assert second.failure_of_another_rank() == expected
        assert first.failure_of_another_rank() is None  # its own
        # A rank whose collective then fails because rank 0 left reports rank 0's error, not its own.
        assert second.report(RuntimeError("Connection closed by peer")) == expected
    finally:
        first.stop()
        second.stop()
        del server
