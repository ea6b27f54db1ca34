"""Named architectures, timm-style: one entry a name, built on demand.

The YAML model cards in ``models/`` describe the same entries for people; a test
keeps the two in agreement.
"""

from __future__ import annotations

import dataclasses

from psdeploy.arch.resnet import ResNet, ResNetConfig
from psdeploy.errors import PsdeployError
from psdeploy.images.preprocess import Preprocess

# The digits demo's PNG files (8x8, ink level v of 0-16 stored as grey 15v) to the demo's arrays: bilinear to
# 32x32, and (v/16 - 0.25) / 0.35 written in x/255 units (x = 15v, so v/16 = x/240). psdeploy.demo_data holds
# those numbers, but the architectures may not import it (it brings scikit-learn); a test keeps them equal.
DIGITS_PREPROCESS = Preprocess(resize=32, crop=32, interpolation="bilinear", mean=(0.25 * 240 / 255,) * 3,
                               std=(0.35 * 240 / 255,) * 3, channel_order="rgb")

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _imagenet_family() -> dict[str, ResNetConfig]:
    out: dict[str, ResNetConfig] = {}
    for depth, layers in _DEPTHS.items():
        for ps in (False, True):
            prefix = "ps_" if ps else ""
            out[f"{prefix}resnet{depth}"] = ResNetConfig(f"{prefix}resnet{depth}", layers, psconv=ps)
            out[f"{prefix}resnext{depth}_32x4d"] = ResNetConfig(
                f"{prefix}resnext{depth}_32x4d", layers, psconv=ps, groups=32, width_per_group=4,
            )
    return out


def _digits_family() -> dict[str, ResNetConfig]:
    """The small 32x32 networks of the demo (3 stages, stride-2 blocks in stages 2 and 3)."""
    common = dict(layers=(2, 2, 2), stem="cifar", stem_width=16, base_planes=16, num_classes=10, input_size=32,
                  demo_data=True, preprocess=DIGITS_PREPROCESS)
    return {
        "ps_resnet_digits": ResNetConfig("ps_resnet_digits", psconv=True, **common),  # type: ignore[arg-type]
        "resnet_digits": ResNetConfig("resnet_digits", psconv=False, **common),  # type: ignore[arg-type]
    }


ARCHS: dict[str, ResNetConfig] = {**_imagenet_family(), **_digits_family()}


def get_config(name: str, num_classes: int | None | str = "default") -> ResNetConfig:
    """Config for ``name``; ``num_classes=None`` gives the detection backbone (C2..C5 outputs)."""
    if name not in ARCHS:
        raise PsdeployError(f"unknown architecture {name!r}; expected one of: {', '.join(sorted(ARCHS))}")
    cfg = ARCHS[name]
    if num_classes != "default":
        cfg = dataclasses.replace(cfg, num_classes=num_classes)  # type: ignore[arg-type]
    return cfg


def plain_counterpart(cfg: ResNetConfig) -> ResNetConfig:
    """The plain ResNet/ResNeXt a PS network came from (the baseline of every comparison)."""
    name = cfg.name.removeprefix("ps_")
    return dataclasses.replace(cfg, name=name, psconv=False)


def build(cfg: ResNetConfig) -> ResNet:
    return ResNet(cfg).eval()


def default_input_shape(cfg: ResNetConfig, batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, cfg.in_chans, cfg.input_size, cfg.input_size)


def odd_sizes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Odd spatial sizes near ``shape`` that make every stride-2 block see odd inputs."""
    n, c, h, w = shape
    return [(n, c, h + 1, w - 1), (n, c, (h // 2) | 1, ((w * 3) // 4) | 1)]
