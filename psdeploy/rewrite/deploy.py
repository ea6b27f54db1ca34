"""Rewrite a loaded ResNet/PS-ResNet into its deploy form.

Every conv absorbs its BatchNorm; every PSConv becomes the chosen lowering, whose
input block order is folded into conv1/bn1 (rows) and output block order into
conv3 (columns). The result holds only standard convs, adds, ReLU, pooling, a
linear head and, for PSConv, the few channel-block gathers the planner proves
unavoidable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d
from psdeploy.arch.resnet import Bottleneck, ResNet
from psdeploy.errors import PsdeployError
from psdeploy.rewrite.fold import (
    block_order_to_channels,
    bn_affine,
    fold_conv_bn,
    permute_in_channels,
    permute_out_channels,
)
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings import Lowering, LoweringStats, get_lowering


class DeployBottleneck(nn.Module):
    def __init__(self, conv1: nn.Module, conv2: nn.Module, conv3: nn.Module, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = conv1, conv2, conv3
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.relu(self.conv3(out) + identity)


class DeployResNet(nn.Module):
    """Same inputs and outputs as the source ``ResNet`` (logits, or the C2..C5 tuple)."""

    def __init__(self, source: ResNet, stem: nn.Conv2d, stages: list[nn.Sequential]) -> None:
        super().__init__()
        self.backbone_only = source.cfg.num_classes is None
        self.stem = stem
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = copy.deepcopy(source.maxpool)
        self.stages = nn.ModuleList(stages)
        if not self.backbone_only:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = copy.deepcopy(source.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.stem(x)))
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        if self.backbone_only:
            return tuple(features)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@dataclass
class LayerReport:
    """What the rewrite did to one PSConv layer."""

    name: str
    stride: int
    channels: int
    groups: int
    clean: bool
    off_design: dict[int, int]
    stats: LoweringStats
    lowering: str = ""
    deployed_name: str = ""  # its module in the deployed model: the name exports and profiles give it


@dataclass
class DeployResult:
    model: nn.Module
    lowering: str
    layers: list[LayerReport] = field(default_factory=list)


def psconv_layers(model: ResNet) -> list[PSConvLayer]:
    """The canonical description of every PSConv in ``model``, in network order."""
    return [PSConvLayer.from_released(name.removesuffix(".conv2"), m) for name, m in model.named_modules()
            if isinstance(m, PSGConv2d)]


def _deploy_block(name: str, deployed_name: str, block: Bottleneck, lowering_name: str,
                  reports: list[LayerReport]) -> DeployBottleneck:
    conv1 = fold_conv_bn(block.conv1, block.bn1)
    conv3 = fold_conv_bn(block.conv3, block.bn3)
    downsample = None
    if block.downsample is not None:
        downsample = fold_conv_bn(block.downsample[0], block.downsample[1])
    if isinstance(block.conv2, PSGConv2d):
        layer = PSConvLayer.from_released(name, block.conv2)
        scale, shift = bn_affine(block.bn2)
        lowered = get_lowering(lowering_name).lower(layer.scaled(scale), shift)
        s = layer.shape
        permute_out_channels(conv1, block_order_to_channels(list(lowered.in_order), s.groups, s.in_block))
        permute_in_channels(conv3, block_order_to_channels(list(lowered.out_order), s.groups, s.out_block))
        conv2: nn.Module = lowered.module
        reports.append(LayerReport(name, s.stride, s.out_channels, s.groups, layer.is_clean,
                                   layer.off_design_blocks(), lowered.stats, lowering_name, f"{deployed_name}.conv2"))
    else:
        conv2 = fold_conv_bn(block.conv2, block.bn2)
    return DeployBottleneck(conv1, conv2, conv3, downsample).eval()


def _released_form(model: ResNet, lowering: Lowering) -> DeployResult:
    """``model`` with every PSConv as ``lowering`` emits it and nothing folded (BatchNorms kept)."""
    released = copy.deepcopy(model)
    reports = []
    for layer in psconv_layers(model):
        s = layer.shape
        lowered = lowering.lower(layer, torch.zeros(s.out_channels))
        released.get_submodule(layer.name).conv2 = lowered.module
        reports.append(LayerReport(layer.name, s.stride, s.out_channels, s.groups, layer.is_clean,
                                   layer.off_design_blocks(), lowered.stats, lowering.name, f"{layer.name}.conv2"))
    return DeployResult(released, lowering.name, reports)


def rewrite(model: ResNet, lowering: str = "grouped", choices: dict[str, str] | None = None) -> DeployResult:
    """The deploy form of ``model`` (``reference``: the released form, nothing folded).

    ``choices`` (layer name -> lowering, from ``--lowering auto``'s search) overrides ``lowering`` per layer.
    """
    model = model.eval()
    chosen = get_lowering(lowering)
    if not chosen.folds_batchnorm:
        return _released_form(model, chosen)
    choices = choices or {}
    for name in set(choices.values()):
        if not get_lowering(name).folds_batchnorm:
            raise PsdeployError(f"--lowering {name}: keeps the released form and cannot be mixed per layer")
    reports: list[LayerReport] = []
    stages = []
    for index, stage_name in enumerate(model.stage_names):  # DeployResNet.stages[index] is this stage
        blocks = [
            _deploy_block(f"{stage_name}.{i}", f"stages.{index}.{i}", block,
                          choices.get(f"{stage_name}.{i}", lowering), reports)
            for i, block in enumerate(getattr(model, stage_name))
        ]
        stages.append(nn.Sequential(*blocks))
    stem = fold_conv_bn(model.conv1, model.bn1)
    return DeployResult(DeployResNet(model, stem, stages).eval(), lowering, reports)
