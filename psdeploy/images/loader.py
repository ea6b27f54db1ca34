"""Images decoded and preprocessed by a pool of threads, batch by batch, while the caller runs models.

``workers`` threads keep decoding ahead of the batch being inferred, so reading JPEGs overlaps inference
instead of adding to it: Pillow's decoders and resampling, and numpy's arithmetic, release the
interpreter. Threads, not processes: worker processes are forks of the caller (its runtimes' thread
pools and all), and torch's DataLoader leaves a SIGCHLD handler installed in the caller for good, under
which a later child's exit (a benchmark's load) was seen to crash the process. A file that does not
decode is not an exception in the pool: it comes back as a reason, and the caller decides (stop, or
with --skip-bad count it).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError
from psdeploy.images.decode import BadImage, read_rgb
from psdeploy.images.preprocess import Preprocess

PREFETCH_BATCHES = 4  # decoded ahead of the one being inferred: rides over a slow file without holding many


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass
class Batch:
    """Samples ready for a model (``indices`` into the file list) and the files of this batch that were bad."""

    indices: list[int]
    x: np.ndarray  # float32 N,3,H,W (N may be 0 when every file of the batch was bad)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


class _Samples:
    """Item i is (i, sample or None, reason)."""

    def __init__(self, files: tuple[Path, ...], preprocess: Preprocess) -> None:
        self.files, self.preprocess = files, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, self.preprocess.apply(read_rgb(self.files[index])), ""
        except BadImage as exc:
            return index, None, exc.reason


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
    """``files`` decoded and preprocessed in order, ``batch`` at a time, by ``workers`` threads (0: this one);
    ``size`` (H, W): what every sample must come out as. Stopped early, the pool drops what it had queued."""
    workers = default_workers() if workers is None else workers
    samples = _Samples(files, preprocess)
    chunks = [range(start, min(start + batch, len(files))) for start in range(0, len(files), batch)]
    if not workers:
        for chunk in chunks:
            yield _batch([samples[i] for i in chunk], files, size)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="psdeploy-images")
    ahead = iter(chunks)
    queued: deque[list] = deque()

    def queue_next() -> None:
        chunk = next(ahead, None)
        if chunk is not None:
            queued.append([pool.submit(samples.__getitem__, i) for i in chunk])

    try:
        for _ in range(PREFETCH_BATCHES + 1):
            queue_next()
        while queued:
            futures = queued.popleft()
            queue_next()
            yield _batch([f.result() for f in futures], files, size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["Batch", "default_workers", "load_batches"]
