"""Seeded random models that look like trained released checkpoints.

Weights are random but structured as the release leaves them: the PSConv masks
applied at init (so PS-ResNet layers are clean and PS-ResNeXt layers are not), and
BatchNorm statistics away from 0/1 so that folding is really exercised.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d, released_init_mask
from psdeploy.arch.registry import build, get_config
from psdeploy.arch.resnet import ResNet


def seeded_model(arch: str, seed: int = 0, num_classes: int | None | str = "default") -> ResNet:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build(get_config(arch, num_classes))
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.3, 0.3)
                    module.running_var.uniform_(0.5, 2.0)
                    module.weight.uniform_(0.6, 1.4)
                    module.bias.uniform_(-0.2, 0.2)
                elif isinstance(module, PSGConv2d):
                    module.conv.weight[released_init_mask(module)] = 0.0
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()
