"""BatchNorm folding and channel permutations: the algebra the rewrite relies on."""

from __future__ import annotations

import torch
from torch import nn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(y) == scale * y + shift`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))``."""
    scale, shift = bn_affine(bn)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        base = conv.bias.detach() * scale if conv.bias is not None else 0.0
        folded.bias.copy_(base + shift)
    return folded.eval()




def block_order_to_channels(order: list[int], groups: int, block: int) -> torch.Tensor:
    """Channel permutation (new position -> old channel) for a block order repeated in every card."""
    parts = len(order)
    index = [
        (card * parts + part) * block + r
        for card in range(groups)
        for part in order
        for r in range(block)
    ]
    return torch.tensor(index, dtype=torch.long)


def permute_out_channels(conv: nn.Conv2d, perm: torch.Tensor) -> nn.Conv2d:
    """Same conv, output channels reordered (``new[k] = old[perm[k]]``); needs groups == 1."""
    assert conv.groups == 1, "row permutation across groups would mix groups"
    with torch.no_grad():
        conv.weight.copy_(conv.weight[perm])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[perm])
    return conv


def permute_in_channels(conv: nn.Conv2d, perm: torch.Tensor) -> nn.Conv2d:
    """Same conv reading its input in the permuted order (``new input k = old input perm[k]``)."""
    assert conv.groups == 1
    with torch.no_grad():
        conv.weight.copy_(conv.weight[:, perm])
    return conv
