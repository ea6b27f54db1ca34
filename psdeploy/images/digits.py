"""The digits demo's data as image files: 8x8 grayscale PNGs in one folder per class, for each split.

What a user's own data looks like, made from the data the demo model was trained on: ``train/``
(the split it learnt from, for int8 calibration) and ``held-out/`` (the split its top-1 is measured
on). Each file is named after the sample's index in scikit-learn's digits; ink level v is stored as
grey 15v, which the demo model's preprocessing (its card) maps back to the demo's arrays exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psdeploy.demo_data import PNG_STEP, digits_images
from psdeploy.fileio import atomic_output

SPLITS = ("train", "held-out")


def write_digits_images(folder: str | Path, force: bool = False) -> dict[str, int]:
    """``folder``/train/<digit>/<index>.png and ``folder``/held-out/<digit>/<index>.png; the count of each."""
    from PIL import Image

    ink, labels, train, held_out = digits_images()
    counts = {}
    with atomic_output(folder, "-o", directory=True, force=force) as stage:
        for split, indices in zip(SPLITS, (train, held_out), strict=True):
            for index in indices:
                path = stage / split / str(labels[index]) / f"{index:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((ink[index] * PNG_STEP).astype(np.uint8), mode="L").save(path, optimize=True)
            counts[split] = len(indices)
    return counts


__all__ = ["SPLITS", "write_digits_images"]
