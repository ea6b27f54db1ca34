"""The two consoles psdeploy writes to: results on stdout; errors, warnings and progress on stderr.

A module of its own (rich only) so that the command line can report a bad argument or a missing
file without importing the pipeline (torch, onnx and the runtimes take seconds to import).
"""

from __future__ import annotations

import sys

from rich.console import Console

_WIDTH = None if sys.stdout.isatty() else 120  # logs (CI, pipes) get wide, unwrapped tables
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)
