"""The SDPA transformer blocks compute what PyTorch's nn layers compute, with their names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wallwm.trainer.layers import Block, CrossBlock


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("seed", [0, 3])
def test_block_is_a_pre_norm_encoder_layer(seed):
    torch.manual_seed(seed)
    ref = nn.TransformerEncoderLayer(32, 4, 64, 0.0, batch_first=True, norm_first=True)
    torch.manual_seed(seed)
    ours = Block(32, 4, 64)
    assert _same_state(ref, ours)  # same names, same initial weights for a seed
    x = torch.randn(3, 7, 32)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True  # a padded text
    expected = ref(x, src_key_padding_mask=pad)
    assert torch.allclose(ours(x, ~pad), expected, atol=1e-5)
    # a checkpoint of the nn layer loads into the block (models saved before the blocks)
    other = Block(32, 4, 64)
    other.load_state_dict(ref.state_dict())
    assert torch.allclose(other(x, ~pad), expected, atol=1e-5)


def test_cross_block_is_a_pre_norm_decoder_layer():
    torch.manual_seed(1)
    ref = nn.TransformerDecoderLayer(32, 4, 128, 0.0, batch_first=True, norm_first=True)
    torch.manual_seed(1)
    ours = CrossBlock(32, 4, 128)
    assert _same_state(ref, ours)
    x, memory = torch.randn(2, 8, 32), torch.randn(2, 11, 32)
    assert torch.allclose(ours(x, memory), ref(x, memory), atol=1e-5)
    loss = ours(x, memory).square().sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        Block(32, 5, 64)
