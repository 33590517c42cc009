"""semvlp.nn.LayerNorm as a drop-in torch.nn.LayerNorm: constructor, parameters, state_dict, repr, outputs and
gradients."""

import inspect

import pytest
import torch
from torch import nn

from semvlp.nn import LayerNorm
from tolerances import LAYER_NORM_DROPIN_ATOL, max_error

CONFIGS = [
    dict(normalized_shape=8),
    dict(normalized_shape=(3, 5), eps=1e-12),
    dict(normalized_shape=[7], bias=False),
    dict(normalized_shape=6, elementwise_affine=False),
    dict(normalized_shape=10, eps=2.0),  # comparable to the inputs' variance (9): a dropped eps shows at once
]


def test_constructor_matches_torch():
    ours = inspect.signature(LayerNorm.__init__).parameters
    theirs = inspect.signature(nn.LayerNorm.__init__).parameters
    shared = [name for name in ours if name in theirs]
    assert shared == list(theirs)
    assert all(ours[name].default == theirs[name].default for name in theirs)
    extra = [p for name, p in ours.items() if name not in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)  # additions never shift positions


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_parameters_state_dict_and_repr_match_torch(config):
    torch.manual_seed(0)
    theirs, ours = nn.LayerNorm(**config), LayerNorm(**config)
    assert list(ours._parameters) == list(theirs._parameters)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    for name in ("normalized_shape", "eps", "elementwise_affine"):
        assert getattr(ours, name) == getattr(theirs, name)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    back = nn.LayerNorm(**config)
    back.load_state_dict(ours.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), theirs.state_dict().values()))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_outputs_and_gradients_match_torch(config):
    torch.manual_seed(0)
    theirs = nn.LayerNorm(**config)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours = LayerNorm(**config)
    ours.load_state_dict(theirs.state_dict())
    shape = (2, 13) + tuple(theirs.normalized_shape)
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    dy = torch.randn(shape)
    out_ours, out_theirs = ours(x), theirs(x)
    assert max_error(out_ours, out_theirs) <= LAYER_NORM_DROPIN_ATOL
    grads_ours = torch.autograd.grad(out_ours, [x, *ours.parameters()], dy)
    grads_theirs = torch.autograd.grad(out_theirs, [x, *theirs.parameters()], dy)
    for a, b in zip(grads_ours, grads_theirs):
        assert max_error(a, b) <= LAYER_NORM_DROPIN_ATOL


def test_factory_kwargs_and_bad_input():
    norm = LayerNorm(4, dtype=torch.float64, device="cpu")
    assert norm.weight.dtype == torch.float64 and norm.bias.device.type == "cpu"
    with pytest.raises(ValueError, match="x: expected trailing dims"):
        LayerNorm(4)(torch.randn(2, 5))
