"""The DeepSpeed engine in this process (one rank, gloo): export of a ZeRO-3 checkpoint to safetensors, the
checkpoint commit protocol, and activation checkpointing under the engine."""

import json

import torch
from safetensors.torch import load_file

from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.train.checkpoint import CheckpointManager, export_safetensors, latest_tag
from semvlp.train.ds_config import load_deepspeed_config
from semvlp.train.engine import build_engine
from tolerances import FP32_ATOL

from pretrain_runs import REPO, deepspeed_config


def _config() -> SemVLPConfig:
    config = SemVLPConfig.load(REPO / "configs/model/tiny.json")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return config


def _engine(tmp_path, name, config, **overrides):
    run = load_deepspeed_config(deepspeed_config(tmp_path, name), max_steps=20, micro_batch_size=4, lr=5e-3,
                                warmup_steps=1)
    run.activation_checkpointing = overrides.get("activation_checkpointing", False)
    torch.manual_seed(0)
    return build_engine(SemVLPForPretraining(config), run, alternating=True)


def _train(engine, steps, seed=0):
    config = engine.module.config
    for step in range(steps):
        batch = random_batch(config, 4, seed=seed + step, text_len=12, num_regions=6)
        out = engine(batch, mode=("single", "two")[step % 2])
        engine.backward(out.loss)
        engine.step()
    return out.loss.item()


def test_exported_zero3_weights_reproduce_the_model_outputs(group, tmp_path):
    from deepspeed.utils.z3_leaf_module import z3_leaf_module

    config = _config()
    engine = _engine(tmp_path, "zero3_fp32", config)
    model = engine.module
    tied = model.semvlp.text_embeddings.word_embeddings.weight
    assert [p for _, p in model.mlm_head.ds_external_parameters()] == [tied]
    for layer in model.semvlp.encoder.layers:
        blocks = [layer.self_attention, layer.feed_forward]
        blocks += [layer.cross_attention] if layer.cross_attention is not None else []
        assert all(z3_leaf_module(block) for block in blocks) and not z3_leaf_module(layer)
    assert engine.zero_optimization_stage() == 3 and engine.zero_prefetch_bucket_size() == 0
    _train(engine, 3)
    engine.eval()
    batch = random_batch(config, 5, seed=99, text_len=15, num_regions=7)
    with torch.no_grad():
        expected = {mode: engine(batch, mode=mode) for mode in ("single", "two")}
    manager = CheckpointManager(tmp_path / "checkpoints", is_main=True)
    manager.save(engine, 3, {"config.json": json.dumps(config.to_dict())})
    path = export_safetensors(tmp_path / "checkpoints", tmp_path / "export")
    fresh = SemVLPForPretraining(SemVLPConfig.load(tmp_path / "export" / "config.json")).eval()
    fresh.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        for mode, want in expected.items():
            got = fresh(batch, mode=mode)
            for name in ("mlm_logits", "itm_logits", "qa_logits", "mrm_label_logits"):
                assert torch.allclose(getattr(got, name), getattr(want, name), atol=FP32_ATOL, rtol=0), (mode, name)


def _weights(engine):
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def test_a_save_killed_midway_leaves_the_last_good_checkpoint(group, tmp_path):
    engine = _engine(tmp_path, "zero2_fp32", _config())
    manager = CheckpointManager(tmp_path / "checkpoints", is_main=True, keep=2)
    _train(engine, 2)
    manager.save(engine, 2, {})
    good = _weights(engine)
    _train(engine, 2, seed=10)
    # What a kill during the save of step 4 leaves: a partial folder and a half-written pointer file.
    partial = tmp_path / "checkpoints" / "step_00000004.partial"
    partial.mkdir()
    (partial / "mp_rank_00_model_states.pt").write_bytes(b"truncated")
    (tmp_path / "checkpoints" / "latest.tmp").write_text("step_0000")
    assert latest_tag(tmp_path / "checkpoints") == "step_00000002"
    assert manager.load(engine) == 2
    for name, value in _weights(engine).items():
        assert torch.equal(value, good[name]), name
    manager.save(engine, 3, {})
    assert not partial.exists()
    for step in (4, 5):
        manager.save(engine, step, {})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000004", "step_00000005"]


def test_activation_checkpointing_under_the_engine_changes_no_loss(group, tmp_path):
    config = _config()
    plain = _train(_engine(tmp_path, "zero2_fp32", config), 3)
    engine = _engine(tmp_path, "zero2_fp32", config, activation_checkpointing=True)
    calls = []
    inner = engine.module.semvlp.encoder.checkpoint_fn
    engine.module.semvlp.encoder.checkpoint_fn = lambda *args: calls.append(1) or inner(*args)
    assert inner is not None
    assert abs(_train(engine, 3) - plain) <= FP32_ATOL * max(1.0, abs(plain))
    assert len(calls) == 3 * config.num_hidden_layers
