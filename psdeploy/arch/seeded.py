"""Seeded random models that look like trained released checkpoints.

Weights are random but structured as the release leaves them: the PSConv masks applied
at init, as the modules do (so PS-ResNet layers are clean and PS-ResNeXt layers are not;
the gains below scale the masked zeros as zeros). BatchNorm
statistics are what a trained network holds: each conv's output channels get gains
spanning three and a half decades, and the running mean and variance are then measured
on a calibration batch, so variances span ~1e-3..10, means sit away from 0, and the
network stays well scaled however deep it is. Small variances make ``eps`` matter,
so a wrong BatchNorm fold shows.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.arch.registry import build, default_input_shape, get_config
from psdeploy.arch.resnet import ResNet

GAIN_DECADES = (-1.5, 0.5)  # log10 of each conv output channel's gain: variance x 1e-3 .. 10
CALIBRATION_SIZE = 64  # spatial size of the calibration batch (any size calibrates; small is fast)


def _calibrate(model: ResNet) -> None:
    """Running statistics measured on one random batch (cumulative average, as after training)."""
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None
    _, chans, size, _ = default_input_shape(model.cfg)
    size = min(size, CALIBRATION_SIZE)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, chans, size, size))
    for bn in batch_norms:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()


def seeded_model(arch: str, seed: int = 0, num_classes: int | None | str = "default") -> ResNet:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build(get_config(arch, num_classes))
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Conv2d):
                    low, high = GAIN_DECADES
                    gains = 10 ** torch.empty(module.out_channels).uniform_(low, high)
                    module.weight.mul_(gains.view(-1, 1, 1, 1))
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.uniform_(0.6, 1.4)
                    module.bias.uniform_(-0.2, 0.2)
        _calibrate(model)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()
