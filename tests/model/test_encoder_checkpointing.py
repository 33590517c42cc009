"""The encoder's activation-checkpointing switch recomputes each layer in backward and changes no result."""

import functools

import pytest
import torch
import torch.utils.checkpoint

from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from tolerances import FP32_ATOL


def _loss_and_grads(model, batch, mode, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(batch, mode=mode)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["single", "two"])
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_layers_give_the_same_loss_and_gradients(mode, reentrant):
    """Both checkpoint styles (DeepSpeed's, used under the engine, is reentrant like torch's use_reentrant=True)."""
    config = SemVLPConfig.load("configs/model/tiny.json")
    torch.manual_seed(0)
    model = SemVLPForPretraining(config)  # dropout on: recomputation must replay the same masks
    batch = random_batch(config, 5, seed=3, text_len=13, num_regions=7)
    loss, grads = _loss_and_grads(model, batch, mode, seed=11)
    calls = []
    fn = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=reentrant)
    model.semvlp.encoder.checkpoint_fn = lambda *args: calls.append(1) or fn(*args)
    loss_ckpt, grads_ckpt = _loss_and_grads(model, batch, mode, seed=11)
    assert len(calls) == config.num_hidden_layers
    assert torch.allclose(loss, loss_ckpt, atol=FP32_ATOL, rtol=0)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], atol=FP32_ATOL, rtol=0), name


def test_no_recomputation_without_gradients():
    config = SemVLPConfig.load("configs/model/tiny.json")
    model = SemVLPForPretraining(config).eval()
    model.semvlp.encoder.checkpoint_fn = lambda *args: pytest.fail("checkpointing in eval mode")
    with torch.no_grad():
        model(random_batch(config, 2), mode="two")
