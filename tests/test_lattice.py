"""The canonical PSConv description reproduces the released modules, and sees what the weights hold."""

from __future__ import annotations

import pytest
import torch

from psdeploy.arch.psconv import PSGConv2d, released_init_mask
from psdeploy.rewrite.lattice import PSConvLayer, released_design
from tests.conftest import EXACT_TOL, relative_error


def _module(channels: int, groups: int, stride: int, masked: bool, seed: int = 0) -> PSGConv2d:
    torch.manual_seed(seed)
    module = PSGConv2d(channels, channels, 3, stride, 1, 2, groups, 4).eval()  # masked at init, as released
    if not masked:  # as a checkpoint trained without the mask holds it: every block of the dense conv non-zero
        with torch.no_grad():
            module.conv.weight.normal_(0.0, 0.1)
    return module


@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (4, 1), (8, 2)])
@pytest.mark.parametrize("size", [(16, 16), (15, 13), (7, 9)])
def test_lattice_function_equals_released(groups, stride, size, float64) -> None:
    module = _module(64, groups, stride, masked=False)
    layer = PSConvLayer.from_released("l", module)
    x = torch.randn(2, 64, *size)
    with torch.no_grad():
        assert relative_error(layer.forward(x), module(x)) < EXACT_TOL
        assert torch.equal(layer.to_released()(x), module(x))


def test_design_is_the_released_lattice() -> None:
    assert released_design(4, 2) == ((2, 1, 4, 1), (1, 2, 1, 4), (4, 1, 2, 1), (1, 4, 1, 2))


def test_clean_psconv_detected() -> None:
    layer = PSConvLayer.from_released("l", _module(32, 1, 1, masked=True))
    assert layer.is_clean and layer.off_design_blocks() == {1: 0, 2: 0, 4: 0}


def test_unmasked_psconv_reports_blocks() -> None:
    layer = PSConvLayer.from_released("l", _module(32, 1, 1, masked=False))
    assert not layer.is_clean and layer.off_design_blocks()[1] == 8  # 2 blocks per output part


def test_psgconv_released_mask_bug_leaves_most_blocks() -> None:
    module = _module(128, 32, 1, masked=True)  # 32x4d stage-1 width: 1 channel per block
    layer = PSConvLayer.from_released("l", module)
    # 32 cards x 4 parts x 2 off-design blocks = 256; the buggy mask zeroes only those it indexes.
    assert layer.off_design_blocks()[1] == 256 - int(released_init_mask(module)[:, :, 0, 0].sum())
    assert 0 < layer.off_design_blocks()[1] < 256


def test_live_blocks_follow_weights() -> None:
    module = _module(32, 1, 1, masked=True)
    with torch.no_grad():
        module.conv.weight[0:8, 0:8] = 0.5  # card 0, out part 0, in part 0: designed rate is 2
    layer = PSConvLayer.from_released("l", module)
    live = layer.live(1)
    assert live[0, 0, 0] and layer.off_design_blocks()[1] == 1
