"""semvlp.nn.LayerNorm hands one-dim inputs to the op unchecked; a wrong trailing dim still gets the module's
message, after a resolved call too and without affine parameters (where the op has no weight to check against)."""

import pytest
import torch

from semvlp.nn import LayerNorm


@pytest.mark.parametrize("affine", [True, False])
def test_a_wrong_trailing_dim_is_named_after_a_good_call(affine):
    norm = LayerNorm(4, elementwise_affine=affine)
    norm(torch.randn(2, 4))
    for bad in (torch.randn(2, 5), torch.randn(())):
        with pytest.raises(ValueError, match=r"x: expected trailing dims \(4,\), got shape"):
            norm(bad)


def test_other_bad_input_keeps_the_op_message():
    with pytest.raises(ValueError, match="x: expected dtype in"):
        LayerNorm(4)(torch.ones(2, 4, dtype=torch.int64))
