"""Arrays users hand psdeploy in .npy files (an input to run, calibration samples): read safely, as float32.

No pickles (``allow_pickle=False``: a .npy file cannot run code), and a numeric dtype, or a
one-line error naming the option and file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError


def numeric_float32(x: object, where: str) -> np.ndarray:
    """``x`` as float32 if it is a numeric array; ``where``: the option and file it came from."""
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise PsdeployError(f"{where}: dtype {getattr(x, 'dtype', type(x).__name__)}; expected a numeric array")
    return np.ascontiguousarray(x, dtype=np.float32)


def load_npy(path: Path, where: str) -> np.ndarray:
    """A .npy file's numeric array as float32 (any shape: the caller checks it)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PsdeployError(f"{where}: not a readable .npy array ({str(exc).splitlines()[0]}); "
                            f"expected numpy.save output of shape N,C,H,W") from None
    return numeric_float32(x, where)
