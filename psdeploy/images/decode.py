"""One image file -> float32 RGB in [0, 1], or a one-line reason why not.

Decoding is Pillow's, whole (a truncated file is an error, not a grey bottom), the EXIF orientation
applied, and every mode turned into RGB as Pillow converts it (grayscale replicated, alpha dropped,
CMYK and palettes mapped), which is what torchvision's ImageFolder loader does. 16-bit grayscale is
the exception: Pillow's RGB conversion clips it at 255, so it is read at its full range instead
(value / 65535).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compared case-insensitively
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class BadImage(PsdeployError):
    """A file that is not a decodable image: ``path`` and ``reason`` kept apart for --skip-bad's summary."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as float32 H,W,3 in [0, 1], upright; ``BadImage`` if it does not decode."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise BadImage(path, "empty file (0 bytes); expected an image")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency and EXIF notes: the conversion is defined
            with Image.open(path) as image:
                image.load()
                sixteen_bit = image.mode in SIXTEEN_BIT or (image.mode == "I" and image.format == "PNG")  # PNG: <= 16
                image = ImageOps.exif_transpose(image)
                if sixteen_bit:
                    gray = np.asarray(image, dtype=np.float32) / 65535.0
                    return np.repeat(gray[:, :, None], 3, axis=2)
                return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise BadImage(path, "not an image Pillow can read (unknown format or corrupt header)") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(path, f"too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's word for truncated or corrupt data
        raise BadImage(path, f"does not decode ({exc})") from None


__all__ = ["EXTENSIONS", "BadImage", "is_image_file", "read_rgb"]
