"""A checkpoint never runs code and a corrupt one is never loaded: a planted pickle (its checksum recorded in the
manifest, so only the weights-only loading can stop it) and a flipped byte are refused by `semvlp pretrain
--resume` and by `semvlp export`, naming the file; the weights-only guards hold on their own too."""

import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess

import deepspeed.comm
import pytest
import torch
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine
from safetensors.torch import load_file

from semvlp.cli import main
from semvlp.data import random_batch
from semvlp.data.synthetic import write_synthetic
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.train import checkpoint as checkpoint_module
from semvlp.train.checkpoint import CheckpointManager, export_safetensors, verify_checkpoint
from semvlp.train.ds_config import load_deepspeed_config
from semvlp.train.distributed import init_distributed
from semvlp.train.engine import build_engine
from semvlp.train.manifest import MANIFEST, CorruptCheckpointError, write_manifest
from semvlp.train.safe_load import UnsafeCheckpointError, WeightsOnlyCheckpointEngine, weights_only_loads

from pretrain_runs import REPO, command, deepspeed_config, environment, pretrain_args, run, tiny_config

STEPS, EVERY = 4, 2
LATEST, OLDER = "step_00000004", "step_00000002"
_DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIM_STATES = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


class TouchOnUnpickle:
    """Unpickling this calls pathlib.Path.touch on `marker`: code run by a checkpoint file."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _plant(path, marker) -> None:
    """Replaces a checkpoint file by a code-running pickle and records it in the manifest, as an attacker who
    can write the folder would."""
    torch.save({"module": TouchOnUnpickle(marker), "optimizer_state_dict": TouchOnUnpickle(marker)}, path)
    write_manifest(path.parent)
    torch.load(path, weights_only=False)  # the control: DeepSpeed's own torch.load would run it
    assert marker.exists()
    marker.unlink()


def _args(folder, out, steps, *extra):
    return pretrain_args(folder / "data", tiny_config(folder), deepspeed_config(folder, "zero2_fp32"), out, steps, 1,
                         "--checkpoint-every", str(EVERY), *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safety")
    write_synthetic(folder / "data", {"train": 24, "val": 2, "novel": 2}, seed=4, formats=("tsv",))
    run("plain", 1, _args(folder, folder / "run", STEPS))
    return folder


@pytest.fixture
def copy(finished_run, tmp_path):
    """A fresh copy of the finished run (checkpoints step 2 and step 4) for one test to damage."""
    shutil.copytree(finished_run / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def engine_group():
    """A one-rank gloo group for in-process engines, left through deepspeed.comm so that DeepSpeed's cached
    groups go with it (engines built by a later test module would otherwise meet the destroyed group)."""
    saved = {k: os.environ.get(k) for k in _DIST_VARIABLES}
    init_distributed()
    yield
    dist.barrier()
    deepspeed.comm.destroy_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _trained_engine(folder, name):
    """A tiny model under the DeepSpeed engine after one step, and its config."""
    config = SemVLPConfig.load(REPO / "configs/model/tiny.json")
    run_config = load_deepspeed_config(deepspeed_config(folder, name), max_steps=5, micro_batch_size=2)
    engine = build_engine(SemVLPForPretraining(config), run_config, alternating=True)
    batch = random_batch(config, 2, seed=0, text_len=8, num_regions=4).to("cpu", feature_dtype=run_config.dtype)
    out = engine(batch, mode="two")
    engine.backward(out.loss)
    engine.step()
    return engine, config


def _resume_fails(finished_run, out) -> str:
    done = subprocess.run(command("plain", 1, _args(finished_run, out, STEPS + EVERY, "--resume")), cwd=REPO,
                          env=environment(), capture_output=True, text=True, timeout=240)
    assert done.returncode != 0, done.stdout[-2000:]
    return done.stderr


def _export(out, capsys, tag=None) -> tuple[int, str]:
    """`semvlp export` of out/checkpoints: its exit status and stderr."""
    capsys.readouterr()
    status = main(["export", "--checkpoints", str(out / "checkpoints"), "--out", str(out / "export"),
                   *(["--tag", tag] if tag else [])])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name", [MODEL_STATES, OPTIM_STATES])
def test_a_planted_pickle_is_refused_by_resume_and_export_and_never_runs(finished_run, copy, tmp_path, capsys,
                                                                         name):
    planted, marker = copy / "checkpoints" / LATEST / name, tmp_path / "code_ran"
    _plant(planted, marker)
    stderr = _resume_fails(finished_run, copy)
    assert f"{planted}: refused to load" in stderr, stderr[-3000:]
    assert f"The newest good checkpoint is {copy / 'checkpoints' / OLDER}" in stderr
    assert not marker.exists()
    status, stderr = _export(copy, capsys)
    assert status == 2 and f"semvlp: error: {planted}: refused to load" in stderr and "pathlib" in stderr, stderr
    assert not marker.exists() and not (copy / "export" / "model.safetensors").exists()
    # The older checkpoint, untouched, still exports.
    assert _export(copy, capsys, OLDER)[0] == 0 and (copy / "export" / "model.safetensors").is_file()


def test_a_flipped_byte_is_refused_by_resume_and_export(finished_run, copy, capsys):
    damaged = copy / "checkpoints" / LATEST / OPTIM_STATES
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    stderr = _resume_fails(finished_run, copy)
    assert f"{damaged}: its sha256 differs from the one {MANIFEST} records" in stderr, stderr[-3000:]
    assert f"The newest good checkpoint is {copy / 'checkpoints' / OLDER}" in stderr
    assert "resumed from" not in stderr
    status, stderr = _export(copy, capsys)
    assert status == 2 and f"semvlp: error: {damaged}: its sha256 differs" in stderr, stderr


def test_missing_added_and_truncated_files_are_refused(copy):
    root = copy / "checkpoints"
    folder = root / LATEST
    (folder / "config.json").unlink()
    with pytest.raises(CorruptCheckpointError, match=rf"{folder / 'config.json'}: missing.*newest good checkpoint "
                                                     rf"is {root / OLDER}"):
        verify_checkpoint(root, LATEST)
    older = root / OLDER
    (older / "extra.pt").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=f"{older / 'extra.pt'}: not listed.*No other checkpoint"):
        verify_checkpoint(root, OLDER)
    (older / "extra.pt").unlink()
    states = older / MODEL_STATES
    states.write_bytes(states.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError, match=f"{states}: .* bytes where {MANIFEST} records"):
        export_safetensors(root, copy / "export", OLDER)
    (older / MANIFEST).write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match=f"{older / MANIFEST}: unreadable"):
        verify_checkpoint(root, OLDER)


def test_a_checkpoint_from_before_manifests_loads_with_a_warning(copy, caplog, capsys):
    (copy / "checkpoints" / LATEST / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="semvlp.train.checkpoint"):
        assert _export(copy, capsys)[0] == 0
    assert f"{copy / 'checkpoints' / LATEST} has no manifest.json" in caplog.text
    assert (copy / "export" / "model.safetensors").is_file()


def test_each_save_writes_a_manifest_of_every_file(finished_run):
    for tag in (OLDER, LATEST):
        folder = finished_run / "run" / "checkpoints" / tag
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
        assert sorted(recorded) == sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
        assert {"config.json", MODEL_STATES, OPTIM_STATES} <= set(recorded)
        for name, entry in recorded.items():
            data = (folder / name).read_bytes()
            assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_the_weights_only_loads_refuse_on_their_own(engine_group, tmp_path, monkeypatch):
    """With the pre-check switched off, the engine's checkpoint engine (resume) and weights_only_loads (the
    export's zero_to_fp32) still refuse the planted file, and nothing runs."""
    engine, config = _trained_engine(tmp_path, "zero2_fp32")
    assert isinstance(engine.checkpoint_engine, WeightsOnlyCheckpointEngine)
    root = tmp_path / "checkpoints"
    folder = CheckpointManager(root, is_main=True).save(engine, 1, {"config.json": json.dumps(config.to_dict())})
    marker = tmp_path / "code_ran"
    monkeypatch.setattr(checkpoint_module, "check_weights_only", lambda path: None)
    for name in (MODEL_STATES, OPTIM_STATES):
        saved = (folder / name).read_bytes()
        _plant(folder / name, marker)
        with pytest.raises(UnsafeCheckpointError, match=f"{folder / name}: refused to load"):
            CheckpointManager(root, is_main=True).load(engine)
        with pytest.raises(UnsafeCheckpointError, match=f"{folder}: one of its files: refused to load"):
            export_safetensors(root, tmp_path / "export")
        with pytest.raises(UnsafeCheckpointError, match=f"{folder / name}: refused to load"):
            WeightsOnlyCheckpointEngine(TorchCheckpointEngine()).load(str(folder / name))
        assert not marker.exists()
        (folder / name).write_bytes(saved)
        write_manifest(folder)
    assert CheckpointManager(root, is_main=True).load(engine) == 1


def test_weights_only_loads_restores_the_environment(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    with weights_only_loads("checkpoint"):
        assert os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.mark.parametrize("name", ["zero0_fp32", "zero0_bf16"])
def test_a_zero_stage_0_checkpoint_exports_its_fp32_weights(engine_group, tmp_path, name):
    """Stage 0 leaves no optimizer partitions for zero_to_fp32: the export takes the module, or in bf16 the
    optimizer's fp32 master weights, whose bf16 rounding is the module's weights."""
    engine, config = _trained_engine(tmp_path, name)
    CheckpointManager(tmp_path / "checkpoints", is_main=True).save(engine, 1, {"config.json": json.dumps(
        config.to_dict())})
    exported = load_file(str(export_safetensors(tmp_path / "checkpoints", tmp_path / "export")))
    module = engine.module.state_dict()
    assert sorted(exported) == sorted(module) and all(t.dtype == torch.float32 for t in exported.values())
    for key, value in module.items():
        assert torch.equal(exported[key].to(value.dtype), value), key
    if name == "zero0_bf16":
        assert any(not torch.equal(exported[k], module[k].float()) for k, _ in engine.module.named_parameters())
    SemVLPForPretraining(config).load_state_dict(exported, strict=True)


def test_every_rank_refuses_what_the_main_rank_found_corrupt(finished_run, copy):
    """Only the main rank reads the files through; the others stop with its error (naming the file) instead of
    waiting for it (torchrun, 2 ranks)."""
    damaged = copy / "checkpoints" / LATEST / "config.json"
    damaged.write_text(damaged.read_text() + " ")
    done = subprocess.run(command("torchrun", 2, _args(finished_run, copy, STEPS + EVERY, "--resume")), cwd=REPO,
                          env=environment(), capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert f"{damaged}: " in done.stderr and "resumed from" not in done.stderr, done.stderr[-3000:]
