"""PackedLayout against a layout built token by token in Python."""

import pytest
import torch

from semvlp.data import PackedLayout


def _expected(text, regions):
    joint, text_index, region_index, positions, cls, swapped = [], [], [], [], [], []
    for b, (t, r) in enumerate(zip(text, regions)):
        cls.append(len(joint))
        sample_text = [len(joint) + i for i in range(t)]
        sample_regions = [len(joint) + t + i for i in range(r)]
        joint += [("t", b, i) for i in range(t)] + [("r", b, i) for i in range(r)]
        text_index += sample_text
        region_index += sample_regions
        positions += list(range(t))
        swapped += sample_regions + sample_text
    return text_index, region_index, positions, cls, swapped


@pytest.mark.parametrize("text,regions", [([3], [2]), ([5, 1, 4], [2, 3, 0]), ([2, 7], [0, 0]), ([1, 1, 1], [36, 1, 5])])
def test_layout_indices(text, regions):
    layout = PackedLayout.from_lengths(text, regions)
    text_index, region_index, positions, cls, swapped = _expected(text, regions)
    assert layout.text_index.tolist() == text_index
    assert layout.region_index.tolist() == region_index
    assert layout.text_position_ids.tolist() == positions
    assert layout.cls_index.tolist() == cls
    assert layout.cross_kv_index.tolist() == swapped
    stream = [n for pair in zip(text, regions) for n in pair]
    swapped_lengths = [n for pair in zip(regions, text) for n in pair]
    assert layout.stream_cu_seqlens.tolist() == torch.tensor([0] + stream).cumsum(0).tolist()
    assert layout.cross_cu_seqlens_k.tolist() == torch.tensor([0] + swapped_lengths).cumsum(0).tolist()
    assert layout.joint_cu_seqlens.tolist() == torch.tensor([0] + [t + r for t, r in zip(text, regions)]).cumsum(0).tolist()
    assert layout.stream_cu_seqlens.dtype == torch.int32
    # joint_from_modality scatters cat([text, regions]) into joint order.
    stacked = torch.cat([torch.tensor(text_index), torch.tensor(region_index)])
    assert torch.equal(stacked[layout.joint_from_modality], torch.arange(sum(text) + sum(regions)))
    assert (layout.max_joint_len, layout.max_stream_len) == (max(t + r for t, r in zip(text, regions)), max(stream))
    assert (layout.text_lengths(), layout.region_counts()) == (text, regions)


@pytest.mark.parametrize("text,regions,message", [
    ([], [], "text_lengths: expected a non-empty sequence"),
    ([2, 3], [1], r"region_counts: expected 2 counts \(one per sample\), got 1"),
    ([2, -1], [1, 1], "expected non-negative counts"),
])
def test_bad_lengths(text, regions, message):
    with pytest.raises(ValueError, match=message):
        PackedLayout.from_lengths(text, regions)


def test_to_moves_every_tensor():
    layout = PackedLayout.from_lengths([3, 2], [1, 4]).to("meta")
    assert layout.cross_kv_index.device.type == "meta"
    assert layout.max_stream_len == 4
