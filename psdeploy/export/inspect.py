"""What a checkpoint holds and what the rewrite will make of it (``psdeploy inspect``)."""

from __future__ import annotations

from dataclasses import dataclass

from psdeploy.arch.registry import build, default_input_shape, plain_counterpart
from psdeploy.export.counts import count_torch
from psdeploy.load.loader import LoadedModel
from psdeploy.rewrite.deploy import LayerReport, rewrite


@dataclass
class Inspection:
    loaded: LoadedModel
    input_shape: tuple[int, ...]
    layers: list[LayerReport]
    released: tuple[int, int]  # params, MACs of the checkpoint's own form
    deployed: tuple[int, int]  # params, MACs of the grouped deploy form (BN folded)
    plain_deployed: tuple[int, int]  # the plain counterpart, rewritten the same way


def inspect_model(loaded: LoadedModel, lowering: str = "grouped") -> Inspection:
    shape = default_input_shape(loaded.config)
    deploy = rewrite(loaded.model, lowering)
    plain = rewrite(build(plain_counterpart(loaded.config)), lowering)
    return Inspection(
        loaded, shape, deploy.layers, count_torch(loaded.model, shape), count_torch(deploy.model, shape),
        count_torch(plain.model, shape),
    )
