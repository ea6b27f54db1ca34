"""Every rewrite identity, on random weights with non-trivial BatchNorm statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from psdeploy.arch.psconv import PSGConv2d
from psdeploy.arch.registry import build, get_config, plain_counterpart
from psdeploy.arch.seeded import seeded_model
from psdeploy.export.counts import count_torch
from psdeploy.rewrite.deploy import rewrite
from psdeploy.rewrite.lattice import PSConvLayer, released_design
from psdeploy.rewrite.lowerings import LoweredReference, get_lowering
from psdeploy.rewrite.lowerings.plan import plan_branch, plan_layer
from tests.conftest import EXACT_TOL, REWRITE_TOL, relative_error

SIZES = [(32, 32), (33, 31), (17, 25), (9, 9)]


@pytest.mark.parametrize("lowering", ["reference", "grouped", "sliced", "aligned", "polyphase", "fused"])
@pytest.mark.parametrize("size", SIZES)
def test_network_rewrite_exact(lowering, size, float64) -> None:
    model = seeded_model("ps_resnet_digits", seed=5)
    deploy = rewrite(model, lowering).model
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        assert relative_error(deploy(x), model(x)) < EXACT_TOL


@pytest.fixture(scope="module")
def ps_resnext50() -> torch.nn.Module:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield seeded_model("ps_resnext50_32x4d", seed=1)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("lowering", ["reference", "grouped", "sliced", "aligned", "polyphase", "fused"])
def test_ps_resnext_network_exact_at_an_odd_size(lowering, ps_resnext50, float64) -> None:
    """Full-depth PS-ResNeXt-50 as released (non-zero "masked" kernels), every stride-2 block on odd sizes."""
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        assert relative_error(rewrite(ps_resnext50, lowering).model(x), ps_resnext50(x)) < EXACT_TOL


def test_fp32_rewrite_error_is_rounding_only() -> None:
    """What ships is fp32: the same identity there, at the limit measured for it."""
    model = seeded_model("ps_resnet_digits", seed=5)
    x = torch.randn(3, 3, 33, 31)
    with torch.no_grad():
        assert relative_error(rewrite(model, "grouped").model(x), model(x)) < REWRITE_TOL


def test_grouped_form_has_only_standard_ops() -> None:
    deploy = rewrite(seeded_model("ps_resnet_digits"), "grouped").model
    kinds = {type(m).__name__ for m in deploy.modules()}
    assert "BatchNorm2d" not in kinds and "PSGConv2d" not in kinds


@pytest.mark.parametrize("lowering", ["reference", "grouped", "sliced", "aligned", "polyphase", "fused"])
@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (4, 1), (4, 2), (8, 2)])
@pytest.mark.parametrize("masked_nonzero", [False, True])
def test_layer_lowering_exact(lowering, groups, stride, masked_nonzero, float64) -> None:
    """A PSConv + BN + permutations, including PSGConv with non-zero 'masked' kernels."""
    torch.manual_seed(groups * 10 + stride)
    module = PSGConv2d(64, 64, 3, stride, 1, 2, groups, 4).eval()
    if masked_nonzero:  # unmask: as a checkpoint trained without the mask (or PS-ResNeXt's buggy one) holds it
        with torch.no_grad():
            module.conv.weight.normal_(0.0, 0.1)
    layer = PSConvLayer.from_released("l", module)
    if not masked_nonzero:
        layer = _zero_off_design(layer)
    scale, shift = torch.rand(64) + 0.5, torch.randn(64)
    lowered = get_lowering(lowering).lower(layer.scaled(scale), shift)
    x = torch.randn(2, 64, 15, 13)
    perm_in = _channels(lowered.in_order, groups, 64)
    perm_out = _channels(lowered.out_order, groups, 64)
    with torch.no_grad():
        expected = layer.forward(x) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        got = lowered.module(x[:, perm_in])
        # the report's and the search's reference of a lowered layer: the same function, its orders applied
        shifted = LoweredReference(layer.scaled(scale), lowered)(x[:, perm_in]) + shift[perm_out].view(1, -1, 1, 1)
    assert relative_error(got, expected[:, perm_out]) < EXACT_TOL
    assert relative_error(shifted, got) < EXACT_TOL
    assert layer.is_clean == (not masked_nonzero)
    plain_macs = layer.shape.macs_per_output_pixel()
    if lowering == "reference":  # the released module runs its dense conv in full: 1.5x, whatever the weights
        assert lowered.stats.macs_per_pixel == plain_macs * 3 // 2
        return
    # off-design kernels: grouped/polyphase widen the d1 branch (1.5x), fused adds one dense d1 conv (2x)
    extra = {"fused": plain_macs}.get(lowering, plain_macs // 2)
    assert lowered.stats.macs_per_pixel == plain_macs + (extra if masked_nonzero else 0)


def _zero_off_design(layer: PSConvLayer) -> PSConvLayer:
    s = layer.shape
    weights = {}
    for d, w in layer.weights.items():
        mask = torch.from_numpy(layer.designed(d)).repeat(s.groups, 1)  # (groups*parts, parts)
        mask = mask.repeat_interleave(s.out_block, 0).repeat_interleave(s.in_block, 1)
        weights[d] = w * mask[:, :, None, None]
    return PSConvLayer(layer.name, s, weights)


def _channels(order, groups, channels) -> torch.Tensor:
    from psdeploy.rewrite.fold import block_order_to_channels

    return block_order_to_channels(list(order), groups, channels // (groups * len(order)))


def test_planner_clean_lattice() -> None:
    design = np.array(released_design(4, 2))
    plan = plan_layer({d: design == d for d in (1, 2, 4)})
    groups = {b.dilation: b.groups_per_card for b in plan.branches}
    assert groups == {1: 2, 2: 4, 4: 4}
    assert all(b.wasted_blocks == 0 for b in plan.branches)
    assert plan.shuffle_count == 2


def test_two_shuffles_are_the_minimum() -> None:
    """No (pi, sigma) aligns any two of the three rates: at least two need a re-ordering."""
    design = np.array(released_design(4, 2))
    exact_orders = 0
    for pi in itertools.permutations(range(4)):
        branches = [plan_branch(design == d, d, pi) for d in (1, 2, 4)]
        if any(b.wasted_blocks for b in branches):
            continue  # this input order cannot reach the 1.0x form at all
        exact_orders += 1
        for sigma in itertools.permutations(range(4)):
            assert sum(b.aligned(sigma) for b in branches) <= 1
    assert exact_orders > 0


def test_planner_nonclean_lattice_keeps_dense_rate1() -> None:
    design = np.array(released_design(4, 2))
    plan = plan_layer({1: np.ones((4, 4), bool), 2: design == 2, 4: design == 4})
    assert {b.dilation: b.groups_per_card for b in plan.branches}[1] == 1
    assert plan.shuffle_count == 1


@pytest.mark.parametrize("arch, lowering", [("ps_resnet_digits", "grouped"), ("ps_resnet_digits", "fused"),
                                            ("ps_resnet50", "grouped")])
def test_deployed_counts_equal_plain(arch, lowering) -> None:
    shape = (1, 3, 32, 32) if "digits" in arch else (1, 3, 224, 224)
    cfg = get_config(arch)
    deployed = count_torch(rewrite(seeded_model(arch), lowering).model, shape)
    plain = count_torch(rewrite(build(plain_counterpart(cfg)), "grouped").model, shape)
    assert deployed == plain
    if arch == "ps_resnet50":
        assert count_torch(build(plain_counterpart(cfg)), shape)[0] == 25_557_032  # paper Table 2
        assert plain[1] == 4_089_184_256  # 4.089 GMACs, paper Table 2
        assert count_torch(seeded_model(arch), shape)[0] == 31_215_656  # released form, 1.5x conv2


def test_backbone_rewrite_keeps_four_outputs(float64) -> None:
    model = seeded_model("ps_resnet_digits", num_classes=None)
    deploy = rewrite(model, "grouped").model
    x = torch.randn(1, 3, 31, 33)
    with torch.no_grad():
        outs, refs = deploy(x), model(x)
    assert len(outs) == 3 and all(relative_error(a, b) < EXACT_TOL for a, b in zip(outs, refs))


@pytest.mark.parametrize("dilation, stride", [(2, 1), (4, 1), (2, 2), (4, 2)])
@pytest.mark.parametrize("size", [(16, 16), (15, 13), (7, 9), (1, 2)])
def test_polyphase_identity(dilation, stride, size) -> None:
    """Space-to-batch and the stride-2 subsampling identity, odd sizes included."""
    from torch import nn

    from psdeploy.rewrite.lowerings.polyphase import PolyphaseConv

    torch.manual_seed(dilation + stride)
    conv = nn.Conv2d(8, 8, 3, stride, dilation, dilation, groups=2, bias=True).eval()
    poly = PolyphaseConv(conv)
    assert poly.conv.dilation == (1, 1) and poly.conv.stride == (1, 1)
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        assert relative_error(poly(x), conv(x)) < 1e-6


def test_bn_fold_with_small_variances_and_large_eps(float64) -> None:
    """Trained BNs have variances down to ~1e-4, where eps is no rounding detail: a fold that drops it
    (or adds it twice) is off by percent, not ulps."""
    from torch import nn

    from psdeploy.rewrite.fold import fold_conv_bn

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(16, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_var.copy_(10 ** torch.empty(16).uniform_(-4, 1))
        bn.running_mean.copy_(torch.randn(16) * 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        expected = bn(conv(x))
        assert relative_error(fold_conv_bn(conv, bn)(x), expected) < EXACT_TOL
        without_eps = (conv(x) - bn.running_mean.view(1, -1, 1, 1)) / bn.running_var.sqrt().view(1, -1, 1, 1)
        without_eps = without_eps * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        assert relative_error(without_eps, expected) > 1e-2  # the case really is sensitive to eps


def test_seeded_batchnorm_statistics_look_trained() -> None:
    model = seeded_model("ps_resnet50")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    var = torch.cat([b.running_var for b in bns])
    mean = torch.cat([b.running_mean for b in bns])
    assert var.min() < 1e-3 and var.max() > 1.0  # decades apart, as in trained networks
    assert (mean.abs() > 0.05).float().mean() > 0.5  # means away from 0


@pytest.mark.parametrize("stride", [1, 2])
def test_what_each_lowering_says_it_emitted(stride) -> None:
    """The per-layer statistics inspect and the report print, on a clean 64-channel layer (C=64, parts 4)."""
    layer = _zero_off_design(PSConvLayer.from_released("l", PSGConv2d(64, 64, 3, stride, 1, 2, 1, 4)))
    plain = layer.shape.macs_per_output_pixel()
    stats = {name: get_lowering(name).lower(layer, torch.zeros(64)).stats
             for name in ("reference", "grouped", "polyphase", "fused")}
    assert list(map(str, stats["reference"].convs)) == ["3x3 d1 g1", "3x3 d2 g4", "3x3 d4 g4"]
    assert list(map(str, stats["grouped"].convs)) == ["3x3 d1 g2", "3x3 d2 g4", "3x3 d4 g4"]
    assert (stats["reference"].shuffles, stats["reference"].moved_per_pixel) == (1, 64)
    assert stats["grouped"].shuffles == 2 and stats["grouped"].moved_per_pixel == 2 * 64  # two whole gathers
    assert list(map(str, stats["fused"].convs)) == ["3x3 fused d1/2/4 g1"] and stats["fused"].shuffles == 0
    assert all(s.macs_per_pixel == plain for n, s in stats.items() if n != "reference")
    # polyphase moves every dilated branch's input (stride^2 phases of it) and output through space-to-batch
    dilated = [c for c in stats["polyphase"].convs if c.dilated]
    assert all(str(c).startswith("3x3 polyphase-d") for c in dilated)
    moved = stats["grouped"].moved_per_pixel + len(dilated) * (64 * stride**2 + 64)
    assert stats["polyphase"].moved_per_pixel == moved


def test_reference_rewrite_copies_and_reports(float64) -> None:
    model = seeded_model("ps_resnet_digits", seed=3)
    before = {name: id(m) for name, m in model.named_modules()}
    result = rewrite(model, "reference")
    assert {name: id(m) for name, m in model.named_modules()} == before  # the source model is left untouched
    assert all(id(m) not in before.values() for m in result.model.modules())
    assert [(r.name, r.stride, r.channels, r.groups, r.clean, r.lowering) for r in result.layers][:3] == [
        ("layer1.0", 1, 16, 1, True, "reference"), ("layer1.1", 1, 16, 1, True, "reference"),
        ("layer2.0", 2, 32, 1, True, "reference")]
    grouped = rewrite(seeded_model("ps_resnext50_32x4d"), "grouped").layers
    assert [(r.name, r.stride, r.channels, r.groups, r.clean, r.lowering) for r in grouped][3:5] == [
        ("layer2.0", 2, 256, 32, False, "grouped"), ("layer2.1", 1, 256, 32, False, "grouped")]
    assert all(sum(r.off_design.values()) > 0 and r.stats.convs for r in grouped)


def test_planner_prefers_the_identity_and_partitions_blocks() -> None:
    design = np.array(released_design(4, 2))
    plan = plan_layer({d: design == d for d in (1, 2, 4)})
    # among equally cheap plans, one with the same input and output order (the d1 pairs need (0, 2, 1, 3))
    assert plan.in_order == plan.out_order == (0, 2, 1, 3) and plan.shuffle_count == 2
    sparse = np.zeros((4, 4), bool)
    sparse[0, 1] = True  # one live block: every chunk but one is unconstrained
    branch = plan_branch(sparse, 2, (0, 1, 2, 3))
    assert branch.groups_per_card == 4 and sorted(b for s in branch.out_sets for b in s) == [0, 1, 2, 3]
