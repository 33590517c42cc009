"""`semvlp finetune --deepspeed-config`: two CPU ranks (gloo, fp32; ZeRO-2 and ZeRO-3) killed after a checkpoint and
resumed give the uninterrupted run's losses and weights exactly, and the saved model holds the checkpoint's weights;
gradient accumulation 2 x micro-batch b trains as micro-batch 2b; metrics.jsonl and TensorBoard logs are written; bad
set-ups get clear errors."""

import json

import pytest
import safetensors.torch
import torch

from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from semvlp.cli import main
from semvlp.train.checkpoint import latest_tag
from semvlp.train.safe_load import weights_only_loads

from finetune_runs import finetune_args
from pretrain_runs import kill_after_step, losses, run

# Steps after the kill point leave the killer time to act on a loaded machine.
STEPS, EVERY = 12, 3


def _args(folder, out, *extra, config=None, micro=4, deepspeed_config="zero2_fp32"):
    args = finetune_args(folder, out, "qa", STEPS) + ["--deepspeed-config", deepspeed_config, "--checkpoint-every",
                                                      str(EVERY), "--batch-size", str(micro), *extra]
    if config is not None:
        args[args.index("--model-config") + 1] = str(config)
    return args


def _checkpoint_weights(checkpoints):
    with weights_only_loads(checkpoints / latest_tag(checkpoints)):
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoints))


@pytest.mark.parametrize("deepspeed_config", ["zero2_fp32", "zero3_fp32"])
def test_two_ranks_killed_after_a_checkpoint_resume_with_the_same_losses(coco_data, tmp_path, deepspeed_config):
    folder, _ = coco_data
    full = tmp_path / "full"
    done = run("deepspeed", 2, _args(folder, full, deepspeed_config=deepspeed_config))
    assert f"qa (single-stream) after {STEPS} steps:" in done.stdout
    records = losses(full)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(r["mode"] == "single" and r["losses"] == {"qa": r["loss"]} for r in records)
    assert any((full / "tensorboard").iterdir())
    assert {"model.safetensors", "finetune.json", "results.json"} <= {p.name for p in full.iterdir()}

    broken = tmp_path / "broken"
    kill_after_step("torchrun", 2, _args(folder, broken, deepspeed_config=deepspeed_config), EVERY + 1,
                    broken / "metrics.jsonl")
    logged = max(r["step"] for r in losses(broken))
    saved = int(latest_tag(broken / "checkpoints").removeprefix("step_"))
    assert saved % EVERY == 0 and 0 < saved <= logged < STEPS, (saved, logged)
    assert not (broken / "results.json").exists()

    run("torchrun", 2, _args(folder, broken, "--resume", deepspeed_config=deepspeed_config))
    resumed = losses(broken)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in records]
    weights, expected = (safetensors.torch.load_file(str(out / "model.safetensors")) for out in (broken, full))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    # The saved model holds the trained weights, gathered whole from the ZeRO partitions.
    trained = _checkpoint_weights(full / "checkpoints")
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[name], expected[name]) for name in expected)


def test_accumulation_of_two_micro_batches_trains_as_one_twice_as_large(coco_data, tmp_path):
    folder, _ = coco_data
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout draws differ by batch shape
    path = tmp_path / "no_dropout.json"
    path.write_text(json.dumps(config))
    run("plain", 1, _args(folder, tmp_path / "accumulated", "--gradient-accumulation-steps", "2", config=path, micro=2))
    run("plain", 1, _args(folder, tmp_path / "large", config=path, micro=4))
    accumulated, large = losses(tmp_path / "accumulated"), losses(tmp_path / "large")
    assert len(accumulated) == len(large) == STEPS
    # Step 1 is the loss before any update; the steps after it follow from the accumulated gradients.
    assert [r["loss"] for r in accumulated] == pytest.approx([r["loss"] for r in large], rel=1e-5)
    assert len({round(r["loss"], 4) for r in large}) > 1  # the weights did change


def test_engine_flags_without_deepspeed_config_are_refused(coco_data, tmp_path, capsys):
    folder, _ = coco_data
    assert main(finetune_args(folder, tmp_path / "out", "qa") + ["--resume"]) == 2
    assert "--resume: need --deepspeed-config" in capsys.readouterr().err




def test_a_new_run_does_not_write_over_an_earlier_one(coco_data, tmp_path, capsys):
    folder, _ = coco_data
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    assert main(_args(folder, out)) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bf16_run_saves_the_fp32_master_weights_and_overwrite_clears_the_old_run(coco_data, tmp_path):
    folder, _ = coco_data
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    run("plain", 1, _args(folder, out, "--overwrite", "--precision", "bf16"))
    assert [r["step"] for r in losses(out)] == list(range(1, STEPS + 1))
    assert json.loads((out / "finetune.json").read_text())["precision"] == "bf16"
    weights = safetensors.torch.load_file(str(out / "model.safetensors"))
    matrices = [t for t in weights.values() if t.ndim == 2]
    assert all(t.dtype == torch.float32 for t in weights.values())
    # Updated by the optimizer in fp32: most values are not bf16 numbers (the engine's own weights are).
    assert all((t.bfloat16().float() != t).float().mean() > 0.5 for t in matrices)
