"""The demo's data: scikit-learn's handwritten digits, upsampled to 32x32 RGB.

A real data set that ships inside a PyPI package, so the demo model can be trained
and its held-out top-1 measured on any machine without downloads.
"""

from __future__ import annotations

import numpy as np

from psdeploy.errors import PsdeployError

IMAGE_SIZE = 32
CLASSES = 10  # the digits 0-9
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.25
MEAN, STD = 0.25, 0.35
INK_LEVELS = 16  # the digits' pixels are ink levels 0-16
PNG_STEP = 15  # grey levels per ink level in the demo's PNG files (0-240: exact in 8 bits)


def digits_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, train indices, held-out indices): the 8x8 ink levels (0-16) as scikit-learn ships them,
    and the demo's split of them (25% held out, stratified, seed 0)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise PsdeployError("the digits demo needs scikit-learn: pip install 'psdeploy[demo]'") from None
    data = load_digits()
    train, held_out = train_test_split(np.arange(len(data.target)), test_size=HELD_OUT_FRACTION,
                                       random_state=SPLIT_SEED, stratify=data.target)
    return data.images.astype(np.int64), data.target.astype(np.int64), train, held_out


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x as float32 N,3,32,32, normalised."""
    import torch
    import torch.nn.functional as F

    ink, labels, train, held_out = digits_images()
    images = torch.from_numpy(ink.astype(np.float32) / INK_LEVELS)[:, None]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = ((images.repeat(1, 3, 1, 1) - MEAN) / STD).numpy()
    return x[train], labels[train], x[held_out], labels[held_out]


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())
