"""Run a model once and look at chosen modules as they execute (shapes, counts)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def probe(model: nn.Module, input_shape: tuple[int, ...], kinds: tuple[type, ...],
          visit: Callable[[str, nn.Module, tuple, torch.Tensor], None]) -> None:
    """Forward one zero sample of ``input_shape``; ``visit(name, module, inputs, output)`` per ``kinds`` call."""
    handles = [module.register_forward_hook(lambda m, i, o, name=name: visit(name, m, i, o))
               for name, module in model.named_modules() if isinstance(module, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape[1:]))
    finally:
        for handle in handles:
            handle.remove()
