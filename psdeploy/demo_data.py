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


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x as float32 N,3,32,32, normalised."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise PsdeployError("the digits demo needs scikit-learn: pip install 'psdeploy[demo]'") from None
    import torch
    import torch.nn.functional as F

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = ((images.repeat(1, 3, 1, 1) - MEAN) / STD).numpy()
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, data.target, test_size=HELD_OUT_FRACTION, random_state=SPLIT_SEED, stratify=data.target,
    )
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())
