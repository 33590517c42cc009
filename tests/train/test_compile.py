"""torch.compile of a pretraining step (forward and backward, every task, both modes) on token-budget batches:
one graph with no break, the eager loss and gradients, and no recompilation from one batch to the next.

The model is compiled without fullgraph=True and the graph breaks are counted: under fullgraph=True, dynamo
traces a data-dependent op such as `nonzero` into the graph (unbacked sizes, no CUDA graphs) instead of
breaking, so only the count shows it."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.data import random_batch
from tolerances import FP32_ATOL

BUDGET = dict(text_len=9, num_regions=5, token_budget=60)


@pytest.fixture
def config():
    """Two layers, the plug in the second, every task on, no dropout (compiled and eager runs compare exactly)."""
    return SemVLPConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, cross_layers=[1], visual_feat_dim=12,
                        visual_pos_dim=5, max_regions=10, num_region_labels=7, num_qa_labels=5,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _step(run, model, batch, mode):
    """`run` (the model or its compiled form) on the batch, then backward: the loss and `model`'s gradients."""
    model.zero_grad()
    loss = run(batch, mode=mode).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


# "auto" on the CPU: the torch backend's LayerNorm and GELU, the sdpa backend's attention. "triton" on the CPU
# runs Triton's interpreter (tests/conftest.py); the compiled graph holds its registered ops, traced through their
# fake implementations. Its op modules load on the first eager call, which the compiled call follows here.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "auto", "triton"])
@pytest.mark.parametrize("mode", ["single", "two"])
def test_step_compiles_whole_and_matches_eager(config, monkeypatch, fresh_dynamo, backend, mode):
    monkeypatch.setenv("SEMVLP_BACKEND", backend)
    torch.manual_seed(0)
    model = SemVLPForPretraining(config)
    compiled = torch.compile(model, backend="aot_eager")
    batch = random_batch(config, 4, seed=0, **BUDGET)
    expected_loss, expected_grads = _step(model, model, batch, mode)
    loss, grads = _step(compiled, model, batch, mode)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(loss, expected_loss, atol=FP32_ATOL, rtol=0)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=FP32_ATOL, rtol=0, msg=name)


@pytest.mark.slow
def test_budget_batches_run_twenty_steps_without_recompiling(config, monkeypatch, fresh_dynamo):
    monkeypatch.setenv("SEMVLP_BACKEND", "auto")
    torch.manual_seed(0)
    model = SemVLPForPretraining(config)
    compiled = torch.compile(model, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for mode in ("single", "two"):  # one graph per mode
        _step(compiled, model, random_batch(config, 6, seed=0, **BUDGET), mode)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 2
    lengths = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(20):
            batch = random_batch(config, 6, seed=step + 1, **BUDGET)
            lengths.add(tuple(batch.layout.text_lengths()))
            loss, _ = _step(compiled, model, batch, ("single", "two")[step % 2])
            optimizer.step()
            assert torch.isfinite(loss)
    assert len(lengths) > 10  # the samples differ from batch to batch; the shapes do not
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"]
