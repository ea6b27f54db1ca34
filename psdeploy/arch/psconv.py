"""The PSConv modules exactly as released (Li/Yao/Chen, ECCV 2020).

These are the *oracle*: a checkpoint's function is whatever these modules compute
with its weights. As in the release, a new module zeroes the blocks of the dense
``conv`` that the dilated branches cover and masks their gradient, so a network
trained with these modules stays masked (the mask is not in the state dict).
The state-dict keys (``gwconv``, ``gwconv_shift``, ``conv``) are the released ones.
"""

from __future__ import annotations

import torch
from torch import nn


def swap_halves_per_group(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Swap the two channel halves inside each of ``groups`` channel groups (released ``x_merge``)."""
    n, c, h, w = x.shape
    x = x.reshape(n, groups, 2, c // (2 * groups), h, w)
    return x.flip(2).reshape(n, c, h, w)


class PSGConv2d(nn.Module):
    """Poly-scale (group) convolution: ``gwconv(x) + conv(x) + gwconv_shift(swap(x))``.

    ``groups=1`` is the released ``PSConv2d``; ``groups>1`` is ``PSGConv2d``. With the
    released ``dilation=2`` the two grouped branches run at dilation 2 and 4.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 2,
        groups: int = 1,
        parts: int = 4,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.parts = parts
        self.stride = stride
        self.dilation = dilation
        self.gwconv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, dilation, dilation,
            groups=groups * parts, bias=False,
        )
        self.gwconv_shift = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, 2 * dilation, 2 * dilation,
            groups=groups * parts, bias=False,
        )
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False,
        )
        self._mask_dense_conv()

    def _mask_dense_conv(self) -> None:
        """The release's init: the masked blocks zeroed, and their gradient dropped (kept zero while training).
        Skipped on the meta device, where the loader builds a model whose every weight it then overwrites."""
        weight = self.conv.weight
        if weight.is_meta:
            return
        mask = released_init_mask(self)
        with torch.no_grad():
            weight.masked_fill_(mask.to(weight.device), 0.0)
        weight.register_hook(lambda grad: grad.masked_fill(mask.to(grad.device), 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_shift = self.gwconv_shift(swap_halves_per_group(x, self.groups))
        return self.gwconv(x) + self.conv(x) + x_shift


def released_init_mask(module: PSGConv2d) -> torch.Tensor:
    """The boolean mask the released code zeroes in ``conv`` at init (kept zero while training).

    Reproduces the released indexing, including PSGConv2d's ``(i + j * groups)`` where
    ``(i + j * parts)`` was meant: for ResNeXt 32x4d it masks only a handful of blocks,
    which is why trained PS-ResNeXt checkpoints hold non-zero "masked" kernels.
    """
    weight = module.conv.weight
    mask = torch.zeros(weight.shape, dtype=torch.bool, device="cpu")
    g, p = module.groups, module.parts
    c_out, c_in_card = weight.shape[0], weight.shape[1]
    if g == 1:
        bo, bi = c_out // p, c_in_card // p
        for i in range(p):
            mask[i * bo:(i + 1) * bo, i * bi:(i + 1) * bi] = True
            o = (i + p // 2) % p
            mask[o * bo:(o + 1) * bo, i * bi:(i + 1) * bi] = True
        return mask
    bo, bi = c_out // (g * p), c_in_card // p
    for i in range(p):
        for j in range(g):
            for o in (i + j * g, (i + p // 2) % p + j * g):
                mask[o * bo:(o + 1) * bo, i * bi:(i + 1) * bi] = True  # slices past the end are empty
    return mask
