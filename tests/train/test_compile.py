"""torch.compile of a pretraining step (forward and backward, every task, both modes) on token-budget batches:
one graph with no break, the eager loss and gradients, and no recompilation from one batch to the next.

The model is compiled without fullgraph=True and the graph breaks are counted: under fullgraph=True, dynamo
traces a data-dependent op such as `nonzero` into the graph (unbacked sizes, no CUDA graphs) instead of
breaking, so only the count shows it."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters

import semvlp.ops

from semvlp import SemVLPConfig, SemVLPForPretraining, _ext
from semvlp.data import random_batch
from semvlp.ops import dispatch
from semvlp.ops.backends import cuda as cuda_backend
from semvlp.train.engine import compile_engine
from tolerances import FP32_ATOL

BUDGET = dict(text_len=9, num_regions=5, token_budget=60)


@pytest.fixture
def config():
    """Two layers, the plug in the second, every task on, no dropout (compiled and eager runs compare exactly)."""
    return SemVLPConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, cross_layers=[1], visual_feat_dim=12,
                        visual_pos_dim=5, max_regions=10, num_region_labels=7, num_qa_labels=5,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _step(run, model, batch, mode, seed=None):
    """`run` (the model or its compiled form) on the batch, then backward: the loss and `model`'s gradients.
    `seed`: torch's generator seeded first (dropout draws the same masks in both runs)."""
    model.zero_grad()
    if seed is not None:
        torch.manual_seed(seed)
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


@pytest.fixture
def seed_draws_traced():
    """semvlp.ops.trace_seed_draws() for one test (the setting it changes is process-wide)."""
    with torch._dynamo.config.patch(capture_scalar_outputs=False):
        semvlp.ops.trace_seed_draws()
        yield


# With dropout, the Philox backends draw a (seed, offset) pair per call from torch's generator; trace_seed_draws()
# (as `semvlp pretrain --compile` calls it) puts the draws in the graph, where they would otherwise break it at
# every dropout call. The compiled step draws the same pairs as the eager one, so the masks and results agree.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "two"])
def test_triton_step_with_dropout_compiles_whole_and_matches_eager(config, monkeypatch, fresh_dynamo,
                                                                   seed_draws_traced, mode):
    monkeypatch.setenv("SEMVLP_BACKEND", "triton")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.25
    torch.manual_seed(0)
    model = SemVLPForPretraining(config)
    compiled = torch.compile(model, backend="aot_eager")
    batch = random_batch(config, 4, seed=0, **BUDGET)
    expected_loss, expected_grads = _step(model, model, batch, mode, seed=1)
    no_dropout_loss, _ = _step(model, model, batch, mode, seed=2)
    loss, grads = _step(compiled, model, batch, mode, seed=1)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert not torch.equal(no_dropout_loss, expected_loss)  # other seeds, other masks: dropout is on
    torch.testing.assert_close(loss, expected_loss, atol=FP32_ATOL, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=FP32_ATOL, rtol=0, msg=name)


def test_compile_engine_traces_the_seed_draws():
    class Engine:
        def compile(self, backend, compile_kwargs):
            self.compiled_with = (backend, compile_kwargs)

    engine = Engine()
    with torch._dynamo.config.patch(capture_scalar_outputs=False):
        compile_engine(engine, torch.device("cpu"))
        assert torch._dynamo.config.capture_scalar_outputs
    assert engine.compiled_with == ("inductor", {})


@pytest.fixture
def cuda_backend_on_meta(monkeypatch):
    """The cuda backend as on a GPU machine, taking meta tensors for CUDA ones (no GPU here): traced, its ops run
    their Meta kernels of csrc/, which compute shapes only. `auto` takes it wherever it supports the inputs."""
    if _ext.build_error():
        pytest.skip(_ext.build_error())
    backend = dispatch._BACKENDS["cuda"]
    monkeypatch.setattr(backend, "unavailable", lambda: None)
    monkeypatch.setattr(backend, "auto_reasons", None)
    monkeypatch.setattr(cuda_backend, "_on_cuda",
                        lambda name, t: [] if t.device.type == "meta" else [f"{name} is not on the meta device"])
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()


def _semvlp_ops_traced(forward: set, backward: set):
    """An aot_autograd backend that records the semvlp ops of the forward and the backward graph (and runs them
    as traced)."""
    def recorder(found):
        def compile_graph(graph_module, _inputs):
            found.update(str(n.target) for n in graph_module.graph.nodes if str(n.target).startswith("semvlp."))
            return graph_module.forward
        return compile_graph
    return aot_autograd(fw_compiler=recorder(forward), bw_compiler=recorder(backward))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "two"])
def test_cuda_backend_step_traces_whole_through_its_meta_kernels(config, cuda_backend_on_meta, fresh_dynamo,
                                                                 seed_draws_traced, mode):
    # bf16 and head dim 32, which the cuda kernels run; dropout on, so the Philox seed pairs are traced too.
    config.hidden_size, config.num_attention_heads = 64, 2
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.1
    model = SemVLPForPretraining(config).to("meta", torch.bfloat16)
    batch = random_batch(config, 4, seed=0, **BUDGET).to("meta", feature_dtype=torch.bfloat16)
    _, eager_grads = _step(model, model, batch, mode)  # eager on meta tensors: the same kernels' shapes
    forward, backward = set(), set()
    _, grads = _step(torch.compile(model, backend=_semvlp_ops_traced(forward, backward)), model, batch, mode)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert forward == {"semvlp.cuda_varlen_attention_fwd.default", "semvlp.cuda_add_layer_norm_fwd.default"}
    assert backward == {"semvlp.cuda_varlen_attention_bwd.default", "semvlp.cuda_add_layer_norm_bwd.default"}
    assert grads.keys() == eager_grads.keys()
    assert all(g.shape == eager_grads[name].shape for name, g in grads.items())


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
