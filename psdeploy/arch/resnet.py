"""ResNet / ResNeXt with torchvision key names, plain or with PSConv in every bottleneck.

One class serves the classifiers and the detection backbones: with
``num_classes=None`` the network returns the four stage outputs (C2..C5) that a
detector's neck consumes, as mmdetection's ``ResNet`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d
from psdeploy.images.preprocess import IMAGENET, Preprocess


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that fixes the module tree, hence the state-dict keys and shapes."""

    name: str
    layers: tuple[int, ...]
    psconv: bool
    groups: int = 1
    width_per_group: int = 64
    stem: str = "imagenet"  # "imagenet": 7x7/2 + maxpool; "cifar": 3x3/1, no pool
    stem_width: int = 64
    base_planes: int = 64
    num_classes: int | None = 1000
    in_chans: int = 3
    psconv_parts: int = 4
    psconv_dilation: int = 2
    # how the network is deployed and checked, beside what fixes its modules
    input_size: int = 224  # the square image side it was trained at: the default input shape
    demo_data: bool = False  # trained on the bundled digits split: artifacts get the held-out top-1 check
    preprocess: Preprocess = IMAGENET  # what an image goes through before the network: its training recipe

    @property
    def is_backbone(self) -> bool:
        return self.num_classes is None

    def stage_planes(self, stage: int) -> int:
        return self.base_planes * 2**stage

    def stage_width(self, stage: int) -> int:
        """Channels of conv2 in a bottleneck of this stage (torchvision's formula)."""
        return int(self.stage_planes(stage) * (self.width_per_group / 64.0)) * self.groups


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, width: int, stride: int, cfg: ResNetConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if cfg.psconv:
            self.conv2: nn.Module = PSGConv2d(
                width, width, 3, stride, padding=1, dilation=cfg.psconv_dilation,
                groups=cfg.groups, parts=cfg.psconv_parts,
            )
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cfg.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-layout ResNet; stride sits on conv2 ("pytorch" style), as in the PSConv release."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_chans, cfg.stem_width, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        elif cfg.stem == "cifar":
            self.conv1 = nn.Conv2d(cfg.in_chans, cfg.stem_width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {cfg.stem!r}")
        self.bn1 = nn.BatchNorm2d(cfg.stem_width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = cfg.stem_width
        self.stage_names: list[str] = []
        for stage, blocks in enumerate(cfg.layers):
            planes = cfg.stage_planes(stage)
            width = cfg.stage_width(stage)
            stride = 1 if stage == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(inplanes, planes, width, stride if b == 0 else 1, cfg))
                inplanes = planes * Bottleneck.expansion
            name = f"layer{stage + 1}"
            self.add_module(name, nn.Sequential(*layer))
            self.stage_names.append(name)
        self.feature_channels = inplanes
        if cfg.num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features.append(x)
        if self.cfg.num_classes is None:
            return tuple(features)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    @property
    def output_names(self) -> list[str]:
        if self.cfg.num_classes is None:
            return [f"C{i + 2}" for i in range(len(self.stage_names))]
        return ["logits"]
