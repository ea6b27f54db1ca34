"""``psdeploy::psconv``: one PSConv layer as a single operator.

The operator is the lattice itself: a packed ``(C_out, C_in/groups, 3, 3)`` weight
whose block (o, i) of every card is applied at ``rates[o * parts + i]``. PyTorch
runs it as one masked conv per rate (exact; this is the reference and what ONNX's
function body expands to); TVM compiles it as one fused computation
(``psdeploy.backends.tvm.fused``), which is why it exists as one operator at all.
In ONNX it is the node ``DOMAIN::OP_TYPE``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DOMAIN = "ai.psdeploy"
OP_TYPE = "PSConv"
OP_NAME = f"{DOMAIN}::{OP_TYPE}"


def rate_masks(weight_shape: tuple[int, ...], groups: int, parts: int, rates: list[int]) -> dict[int, torch.Tensor]:
    """Per rate, a ``(C_out, C_in/groups, 1, 1)`` 0/1 mask of the kernels applied at that rate."""
    c_out, c_in_card = weight_shape[0], weight_shape[1]
    bo, bi = c_out // (groups * parts), c_in_card // parts
    out_part = (torch.arange(c_out) % (c_out // groups)) // bo
    in_part = torch.arange(c_in_card) // bi
    table = torch.tensor(rates).view(parts, parts)[out_part][:, in_part]
    return {d: (table == d).float().view(c_out, c_in_card, 1, 1) for d in sorted(set(rates))}


@torch.library.custom_op("psdeploy::psconv", mutates_args=())
def psconv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, parts: int,
           rates: list[int]) -> torch.Tensor:
    masks = rate_masks(tuple(weight.shape), groups, parts, rates)
    y = sum(F.conv2d(x, weight * m, None, stride, d, d, groups) for d, m in masks.items())
    return y + bias.view(1, -1, 1, 1)  # type: ignore[operator]


@psconv.register_fake
def _psconv_shape(x, weight, bias, stride, groups, parts, rates):
    n, _, h, w = x.shape
    return x.new_empty(n, weight.shape[0], (h - 1) // stride + 1, (w - 1) // stride + 1)
