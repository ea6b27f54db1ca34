"""Calibration data for int8 builds, as users have it: a folder of images, a .npy array, a folder of .npy files, or
the demo's digits.

One set serves two jobs that must not share samples: post-training quantization reads the
``calibrate`` part, and the accuracy gate compares the int8 artifact with fp32 on the ``held_out``
part. Bad data is refused here in one line, before any quantizer sees it. Images go through the model's
preprocessing; from a folder of them a seeded, class-balanced sample is drawn (class folders are the
classes; a flat folder is one), and the held-out part is a balanced sample of other images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.arrays import load_npy, numeric_float32
from psdeploy.bounds import CALIBRATION_SIZE, DEFAULT_CALIBRATION_SIZE
from psdeploy.errors import PsdeployError
from psdeploy.images.layouts import ImageSet, find_images, read_image_set
from psdeploy.images.loader import load_batches
from psdeploy.images.preprocess import Preprocess

DIGITS = "digits"  # the built-in set: the demo's training split calibrates, its held-out split gates
HELD_OUT_FRACTION = 0.25
MIN_SAMPLES = 20  # 15 to calibrate, 5 to gate at the least
SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Samples (float32 N,C,H,W) to calibrate on and, apart, to gate on."""

    source: str  # as the user named it
    calibrate: np.ndarray
    held_out: np.ndarray
    sha256: str  # of every sample, in the order read
    preprocess: str = ""  # images: the recipe they went through
    skipped: tuple[tuple[str, str], ...] = ()  # images: (file, reason) of those left out as bad (skip_bad)

    def check_shape(self, input_shape: tuple[int, ...]) -> None:
        """Refuse samples whose C,H,W differ from the model's input (0 there: any)."""
        sample = self.calibrate.shape[1:]
        if any(want and want != got for want, got in zip(input_shape[1:], sample)):
            expected = ",".join(str(d or "any") for d in input_shape[1:])
            raise PsdeployError(f"--calibration {self.source}: samples of shape {','.join(map(str, sample))}; "
                                f"expected the model's input {expected} (C,H,W)")

    def batches(self, batch: int) -> list[np.ndarray]:
        """The calibration samples in the model's own batch; a tail that would not fill one is left out."""
        if len(self.calibrate) < batch:
            raise PsdeployError(f"--calibration {self.source}: {len(self.calibrate)} samples to calibrate on; "
                                f"expected at least the model's batch of {batch}")
        return [self.calibrate[i:i + batch] for i in range(0, len(self.calibrate) - batch + 1, batch)]


def _fingerprint(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def _read_folder(folder: Path) -> np.ndarray:
    """Every ``*.npy`` in the folder, sorted by name: each one sample (C,H,W) or a batch (N,C,H,W)."""
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise PsdeployError(f"--calibration {folder}: no .npy files or images in the folder; expected images, or "
                            f"samples (C,H,W) or batches (N,C,H,W) as .npy files")
    arrays = []
    for f in files:
        x = load_npy(f, f"--calibration {f}")
        if x.ndim not in (3, 4):
            raise PsdeployError(f"--calibration {f}: shape {x.shape}; expected one sample C,H,W or a batch N,C,H,W")
        arrays.append(x[None] if x.ndim == 3 else x)
    if len({a.shape[1:] for a in arrays}) > 1:
        raise PsdeployError(f"--calibration {folder}: samples of different shapes "
                            f"({', '.join(sorted({','.join(map(str, a.shape[1:])) for a in arrays}))}); "
                            f"expected one C,H,W")
    return np.concatenate(arrays)


def _decode(images: ImageSet, preprocess: Preprocess, skip_bad: bool,
            skipped: list[tuple[str, str]]) -> np.ndarray:
    """Every image of the set through ``preprocess``, N,3,H,W; a bad file stops, or with ``skip_bad`` is listed."""
    size = (preprocess.crop, preprocess.crop) if preprocess.crop else None
    arrays = []
    for batch in load_batches(images.files, preprocess, 32, size=size):
        for index, reason in batch.bad:
            if not skip_bad:
                raise PsdeployError(f"--calibration {images.files[index]}: {reason} (--skip-bad skips such files, "
                                    f"and counts them)")
            skipped.append((images.name(index), reason))
        arrays.append(batch.x)
    if len({a.shape[1:] for a in arrays if len(a)}) > 1:
        raise PsdeployError(f"--calibration {images.root}: images preprocessed to different sizes; give the "
                            f"preprocessing a crop")
    return np.concatenate(arrays)


def _read_images(folder: Path, preprocess: Preprocess | None, size: int, skip_bad: bool) -> CalibrationSet:
    """``size`` images to calibrate on and a third as many held out, each part a seeded class-balanced sample."""
    if preprocess is None:
        raise PsdeployError(f"--calibration {folder}: a folder of images, read through the model's preprocessing, "
                            f"which was not given; expected arrays (.npy) here")
    CALIBRATION_SIZE.check(size)
    images = read_image_set(folder, labelled=False, option="--calibration")
    total = min(len(images.files), size + round(size / 3))
    if total < MIN_SAMPLES:
        raise PsdeployError(f"--calibration {folder}: {total} images; expected at least {MIN_SAMPLES} (a quarter is "
                            f"held out to check the int8 artifact)")
    held_out, calibrate = images.balanced(total, SPLIT_SEED).split(round(total * HELD_OUT_FRACTION), SPLIT_SEED)
    skipped: list[tuple[str, str]] = []
    x_cal, x_held = (_decode(part, preprocess, skip_bad, skipped) for part in (calibrate, held_out))
    if len(x_cal) < 1 or len(x_held) < 1:
        raise PsdeployError(f"--calibration {folder}: too few images decoded ({len(skipped)} skipped as bad)")
    return CalibrationSet(str(folder), x_cal, x_held, _fingerprint(np.concatenate([x_cal, x_held])),
                          preprocess.describe(), tuple(skipped))


def _split(source: str, x: np.ndarray) -> CalibrationSet:
    """Checked, then shuffled (seeded) and cut: the last quarter is held out for the gate."""
    if x.ndim != 4:
        raise PsdeployError(f"--calibration {source}: shape {x.shape}; expected N,C,H,W")
    if len(x) < MIN_SAMPLES:
        raise PsdeployError(f"--calibration {source}: {len(x)} samples; expected at least {MIN_SAMPLES} "
                            f"(a quarter is held out to check the int8 artifact)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise PsdeployError(f"--calibration {source}: {bad} of {len(x)} samples hold NaN or infinite values; expected finite data")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    cut = len(x) - max(1, round(len(x) * HELD_OUT_FRACTION))
    return CalibrationSet(source, x[order[:cut]], x[order[cut:]], _fingerprint(x))


def _digits() -> CalibrationSet:
    from psdeploy.demo_data import digits_split

    x_train, _, x_test, _ = digits_split()
    calibrate = x_train[:DEFAULT_CALIBRATION_SIZE]
    return CalibrationSet(DIGITS, calibrate, x_test, _fingerprint(np.concatenate([calibrate, x_test])))


def is_image_folder(path: Path) -> bool:
    """A folder of images (at any depth), not of .npy arrays."""
    return path.is_dir() and not any(path.glob("*.npy")) and bool(find_images(path))


def read_calibration(data: str | Path | np.ndarray, name: str = "(array)", *, preprocess: Preprocess | None = None,
                     size: int = DEFAULT_CALIBRATION_SIZE, skip_bad: bool = False) -> CalibrationSet:
    """``digits``, a .npy file, a folder of them, an array already in memory (float N,C,H,W; ``name`` says
    what it holds), or a folder of images: ``size`` of them calibrate, through the model's ``preprocess``."""
    if isinstance(data, np.ndarray):
        return _split(name, numeric_float32(data, f"--calibration {name}"))
    if str(data) == DIGITS:
        return _digits()
    path = Path(data)
    if is_image_folder(path):
        return _read_images(path, preprocess, size, skip_bad)
    if path.is_dir():
        return _split(str(path), _read_folder(path))
    if path.suffix != ".npy" or not path.is_file():
        raise PsdeployError(f"--calibration {path}: no such .npy file or folder; expected a folder of images, a .npy "
                            f"array (N,C,H,W), a folder of .npy files, or '{DIGITS}'")
    return _split(str(path), load_npy(path, f"--calibration {path}"))


__all__ = ["DIGITS", "CalibrationSet", "is_image_folder", "read_calibration"]
