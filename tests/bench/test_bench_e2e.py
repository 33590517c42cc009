"""bench_e2e: the padded inputs the Hugging Face peers get, the FLOP formulas, and a --quick run on the CPU."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import bench_e2e, harness
from bench.e2e_inputs import padded, step_flops
from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining


def _config(**overrides):
    values = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=16, visual_feat_dim=12, max_regions=5, num_region_labels=7,
                  num_qa_labels=9, cross_layers=[1], tasks=bench_e2e.PEER_TASKS)
    values.update(overrides)
    return SemVLPConfig(**values)


def test_padded_batch_holds_the_packed_batch():
    config = _config()
    batch = random_batch(config, 4, seed=3, text_len=9, num_regions=5)
    p = padded(batch)
    lengths = batch.layout.text_lengths()
    assert p.text_mask.sum(dim=1).tolist() == lengths
    assert torch.equal(p.input_ids[p.text_mask.bool()], batch.input_ids)
    assert (p.input_ids[~p.text_mask.bool()] == 0).all()
    labelled = p.mlm_labels != -100
    assert labelled.sum() == batch.mlm_positions.numel()
    assert torch.equal(p.mlm_labels[labelled], batch.mlm_targets[batch.mlm_positions.argsort()])
    assert torch.equal(p.features.flatten(0, 1), batch.region_features)
    assert p.region_masked.sum() == batch.mrm_positions.numel()
    masked = p.region_masked.bool()
    assert torch.equal(p.region_labels[masked], batch.mrm_label_targets[batch.mrm_positions.argsort()])
    assert torch.equal(p.feature_targets[masked], batch.mrm_feature_targets[batch.mrm_positions.argsort()])


@pytest.mark.parametrize("mode", ["single", "two"])
def test_step_flops_match_a_flop_counter(mode):
    # The reference backend attends with matmuls the counter sees; equal text and region lengths leave its
    # per-segment padding empty, so the count is exactly the model FLOPs of the formula.
    config = _config(backend="reference")
    batch = random_batch(config, 3, seed=0, text_len=3, num_regions=3)
    model = SemVLPForPretraining(config).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch, mode=mode)
    assert 3 * counter.get_total_flops() == step_flops(batch, config, mode)


def test_lxmert_gets_each_stream_the_same_number_of_blocks():
    config = SemVLPConfig(num_hidden_layers=12)  # cross-attention in the top half
    assert bench_e2e.lxmert_layers(config) == {"l_layers": 6, "r_layers": 6, "x_layers": 6}


def test_quick_run_on_the_cpu_writes_every_comparison(tmp_path):
    # a generous budget never binds: --calls fixes the work, whatever the load of the machine
    argv = ["--quick", "--device", "cpu", "--calls", "2", "--rounds", "1", "--budget", "900",
            "--out-dir", str(tmp_path)]
    assert harness.main(bench_e2e.build, add_arguments=bench_e2e.add_arguments, argv=argv) == 0
    (path,) = tmp_path.glob("e2e_tiny_cpu_*.json")
    record = json.loads(path.read_text())
    rows = {(r["case"], r["provider"]): r for r in record["results"]}
    for case in bench_e2e.CASES:
        for provider in ("hf", "semvlp"):
            row = rows[case, provider]
            assert row["status"] == "ok", row
            assert row["rates"]["samples_per_s"] > 0 and row["tflops"] > 0
        assert rows[case, "semvlp_compile"]["status"] == "unsupported"
        assert rows[case, "semvlp"]["speedup_vs_baseline"] > 0
