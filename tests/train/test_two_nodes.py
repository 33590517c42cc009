"""Two nodes simulated on one machine: two `torchrun --nnodes 2 --nproc-per-node 1` launches (node ranks 0 and 1)
meeting at 127.0.0.1. They train, checkpoint into a folder both see and resume from it; with a folder per node
(no shared filesystem) the resume is refused, naming what each rank sees."""

import subprocess
import sys

import pytest

from pretrain_runs import REPO, deepspeed_config, environment, free_port, losses, pretrain_args, tiny_config


def _two_nodes(args_of_node, timeout=240) -> list[subprocess.CompletedProcess]:
    port = free_port()
    launches = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                                  "1", "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port",
                                  str(port), "-m", "semvlp.cli", *args_of_node(node)],
                                 cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for node in (0, 1)]
    try:
        outputs = [launch.communicate(timeout=timeout)[0] for launch in launches]
    finally:
        for launch in launches:
            if launch.poll() is None:
                launch.kill()
    return [subprocess.CompletedProcess(launch.args, launch.returncode, output)
            for launch, output in zip(launches, outputs)]


def _succeeded(done):
    for node, d in enumerate(done):
        assert d.returncode == 0, f"node {node}:\n{d.stdout[-4000:]}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two steps trained on two nodes into one folder, and the arguments of further runs."""
    folder = tmp_path_factory.mktemp("two_nodes")
    model, ds = tiny_config(folder), deepspeed_config(folder, "zero2_fp32")

    def args(out, steps, *extra):
        return pretrain_args("synthetic", model, ds, out, steps, 1, "--synthetic-scenes", "40",
                             "--checkpoint-every", "2", *extra)

    _succeeded(_two_nodes(lambda node: args(folder / "run", 2)))
    return folder, args


@pytest.mark.slow
def test_two_nodes_train_checkpoint_and_resume(setup):
    folder, args = setup
    out = folder / "run"
    assert (out / "checkpoints" / "step_00000002").is_dir()
    first = losses(out)
    assert [r["step"] for r in first] == [1, 2]
    _succeeded(_two_nodes(lambda node: args(out, 4, "--resume")))
    resumed = losses(out)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert resumed[:2] == first  # the resumed run appends to the history
    assert (out / "checkpoints" / "step_00000004").is_dir()


@pytest.mark.slow
def test_without_a_shared_filesystem_resume_is_refused(setup):
    """Node 1 writes to a folder of its own, as on machines without a shared filesystem: it sees no checkpoint
    (nor would node 0's folder hold node 1's checkpoint shards)."""
    folder, args = setup
    done = _two_nodes(lambda node: args(folder / ("run" if node == 0 else "node1_disk"), 6, "--resume"))
    for node, d in enumerate(done):
        assert d.returncode != 0, d.stdout[-3000:]
        assert "the ranks see different latest checkpoints" in d.stdout, d.stdout[-3000:]
    assert "rank 1: none); the output folder must be on a filesystem that every node shares" in done[0].stdout
