"""The preprocessing a model was trained with, as data: shorter-side resize, centre crop, mean/std, channel order.

It belongs to the model (its card, and the export record, carry it), so the images measured go
through what the network saw in training. The steps are torchvision's evaluation transform on PIL
images (``Resize(s)``, ``CenterCrop(c)``, ``ToTensor``, ``Normalize``), resampled by Pillow's own
filters, but in float32 throughout: torchvision rounds the resized image to 8 bits, a difference of
at most half a grey level, and the float path reproduces an array pipeline (the digits demo's)
to float precision.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

from psdeploy.errors import PsdeployError

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
Triple = tuple[float, float, float]


class Preprocess(BaseModel):
    """From a decoded RGB image (float32 H,W,3 in [0, 1]) to the model's input sample (float32 3,H,W)."""

    # psdeploy.schema.Strict's settings: the architectures carry a recipe and may not import the schema module
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    resize: PositiveInt | None  # the shorter side's length after resizing (None: not resized)
    crop: PositiveInt | None  # the side of the square centre crop (None: not cropped)
    interpolation: Interpolation = "bilinear"
    mean: Triple  # per channel, in [0, 1] units, in RGB order
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    channel_order: Literal["rgb", "bgr"] = "rgb"

    def describe(self) -> str:
        """One line: what every image goes through."""
        steps = []
        if self.resize:
            steps.append(f"resize shorter side to {self.resize} ({self.interpolation})")
        if self.crop:
            steps.append(f"center crop {self.crop}x{self.crop}")
        steps.append(f"{self.channel_order.upper()}, (x/255 - mean {_numbers(self.mean)}) / std {_numbers(self.std)}")
        return ", ".join(steps)

    def output_size(self) -> int | None:
        """The side of the square sample this recipe makes, whatever the image (None: it depends on the image)."""
        return self.crop

    def with_overrides(self, resize: int | None = None, crop: int | None = None, mean: Triple | None = None,
                       std: Triple | None = None) -> Preprocess:
        """This recipe with the given steps replaced (the command line's --resize, --crop, --mean, --std)."""
        given = {"resize": resize, "crop": crop, "mean": mean, "std": std}
        return Preprocess.model_validate({**self.model_dump(), **{k: v for k, v in given.items() if v is not None}})

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (float32 H,W,3 in [0, 1]) -> the normalised sample, float32 3,H',W'."""
        x = rgb
        if self.resize:
            x = resize_shorter_side(x, self.resize, self.interpolation)
        if self.crop:
            x = center_crop(x, self.crop)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.channel_order == "bgr":
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:.4g}" for v in values)


IMAGENET = Preprocess(resize=256, crop=224, interpolation="bilinear", mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225), channel_order="rgb")  # torchvision's ImageNet evaluation recipe


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``shorter`` and the longer one scaled and truncated, as torchvision computes it."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def resize_shorter_side(rgb: np.ndarray, shorter: int, interpolation: Interpolation) -> np.ndarray:
    """Each channel resampled by Pillow in float32 (mode ``F``): Pillow's filters, antialiased when shrinking."""
    from PIL import Image

    height, width = resized_size(rgb.shape[0], rgb.shape[1], shorter)
    if (height, width) == rgb.shape[:2]:
        return rgb
    resample = getattr(Image.Resampling, interpolation.upper())
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c]), mode="F").resize((width, height),
                                                                                                resample))
                for c in range(rgb.shape[2])]
    return np.stack(channels, axis=2)


def center_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    """torchvision's ``CenterCrop``: offsets rounded half to even; an image smaller than the crop padded with 0."""
    height, width = rgb.shape[:2]
    if height < side or width < side:
        pad_h, pad_w = max(side - height, 0), max(side - width, 0)
        rgb = np.pad(rgb, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = rgb.shape[:2]
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return rgb[top:top + side, left:left + side]


def parse_triple(text: str, option: str) -> Triple:
    """``0.5`` or ``0.485,0.456,0.406`` -> three finite numbers (one is used for every channel)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(np.isfinite(values)):
        raise PsdeployError(f"{option} {text!r}: expected one number or three separated by commas (R,G,B), "
                            f"e.g. 0.485,0.456,0.406")
    return values[0], values[1], values[2]


__all__ = ["IMAGENET", "Preprocess", "center_crop", "parse_triple", "resize_shorter_side", "resized_size"]
