"""Third-party noise, kept from the user unless ``--verbose`` asks for it.

torch's exporters, onnxscript and TVM print progress, deprecation warnings and internal
notes that say nothing to someone deploying a model; psdeploy reports what matters
itself. Errors are never hidden: only warnings, info logs and chatter on stdout are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

_verbose = False


def set_verbose(verbose: bool) -> None:
    """``--verbose``: let every third-party warning and log through."""
    global _verbose
    _verbose = verbose


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Inside the block, Python warnings, stdout chatter and ``loggers`` below ERROR are dropped."""
    if _verbose:
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name in loggers:
            logger = logging.getLogger(name)
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
        yield
