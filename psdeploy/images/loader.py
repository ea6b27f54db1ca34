"""Images decoded and preprocessed in a pool of worker processes, batch by batch, while the caller runs models.

torch's DataLoader keeps ``workers`` processes decoding ahead of the batch being inferred (each with
one torch thread), so reading JPEGs overlaps inference instead of adding to it. A file that does not
decode is not an exception in the worker: it comes back as a reason, and the caller decides (stop,
or with --skip-bad count it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError
from psdeploy.images.decode import BadImage, read_rgb
from psdeploy.images.preprocess import Preprocess

PREFETCH_BATCHES = 4  # per worker: enough to ride over a slow file without holding many batches of images


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass
class Batch:
    """Samples ready for a model (``indices`` into the file list) and the files of this batch that were bad."""

    indices: list[int]
    x: np.ndarray  # float32 N,3,H,W (N may be 0 when every file of the batch was bad)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


class _Samples:
    """The DataLoader's dataset: item i is (i, sample or None, reason)."""

    def __init__(self, files: tuple[Path, ...], preprocess: Preprocess) -> None:
        self.files, self.preprocess = files, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, self.preprocess.apply(read_rgb(self.files[index])), ""
        except BadImage as exc:
            return index, None, exc.reason


def _as_list(items: list) -> list:
    return items


def _batch(items: list[tuple[int, np.ndarray | None, str]], files: tuple[Path, ...],
           size: tuple[int, int] | None) -> Batch:
    good = [(i, x) for i, x, _ in items if x is not None]
    for i, x in good:
        if size and x.shape[1:] != size:
            raise PsdeployError(f"{files[i]}: preprocessed to {x.shape[1]}x{x.shape[2]}; the model takes "
                                f"{size[0]}x{size[1]} inputs (give --crop, or --resize and --crop, to make them)")
    if len({x.shape for _, x in good}) > 1:
        raise PsdeployError(f"{files[good[0][0]]}: images preprocessed to different sizes; give --crop to make "
                            f"them one size")
    x = np.stack([x for _, x in good]) if good else np.zeros((0, 3, *(size or (0, 0))), np.float32)
    return Batch([i for i, _ in good], x, [(i, reason) for i, x, reason in items if x is None])


def load_batches(files: tuple[Path, ...], preprocess: Preprocess, batch: int, workers: int | None = None,
                 size: tuple[int, int] | None = None) -> Iterator[Batch]:
    """``files`` decoded and preprocessed in order, ``batch`` at a time, by ``workers`` processes (0: this one);
    ``size`` (H, W): what every sample must come out as."""
    from torch.utils.data import DataLoader

    workers = default_workers() if workers is None else workers
    loader = DataLoader(_Samples(files, preprocess), batch_size=batch, num_workers=workers, collate_fn=_as_list,
                        prefetch_factor=PREFETCH_BATCHES if workers else None)
    for items in loader:
        yield _batch(items, files, size)


__all__ = ["Batch", "default_workers", "load_batches"]
