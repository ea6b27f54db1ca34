"""PyTorch deploy model -> ONNX file, written atomically.

opset >= 18 uses torch's dynamo exporter (the maintained one); an older opset,
which that exporter cannot down-convert for these graphs, uses the TorchScript
exporter. Either way the file appears at its final path only once complete.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from psdeploy.errors import PsdeployError

DEFAULT_OPSET = 18
INPUT_NAME = "input"


def check_writable(path: Path) -> None:
    """Fail before any work if ``path`` cannot be created."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PsdeployError(f"-o {path}: is a directory; expected a file path")
    if not parent.is_dir():
        raise PsdeployError(f"-o {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PsdeployError(f"-o {path}: directory {parent} is not writable")


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _quiet():
    """torch's exporters print progress and warnings; psdeploy reports on its own."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


def export_to_file(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, ...],
    output_names: list[str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> None:
    """Export ``model`` for inputs of ``input_shape`` (batch dim dynamic if asked) to ``path``."""
    if opset < 13:
        raise PsdeployError(f"--opset {opset}: too old; expected 13 or newer")
    from psdeploy.export.psconv_onnx import define_psconv_functions, translation_table
    from psdeploy.rewrite.lowerings.fused import FusedPSConv

    if opset < 18 and any(isinstance(m, FusedPSConv) for m in model.modules()):
        raise PsdeployError(f"--opset {opset}: the fused lowering's PSConv node needs the opset >= 18 exporter")
    example = (torch.randn(*input_shape),)
    model = model.eval()
    with _quiet(), torch.no_grad():
        if opset >= 18:
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
            program = torch.onnx.export(
                model, example, None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_shapes=shapes, optimize=True, verbose=False,
                custom_translation_table=translation_table(),
            )
            onnx_model = program.model_proto
            if define_psconv_functions(onnx_model):
                onnx.save(onnx_model, str(path))
            else:
                program.save(str(path), external_data=False)
        else:
            axes = {n: {0: "batch"} for n in [INPUT_NAME, *output_names]} if dynamic_batch else None
            torch.onnx.export(
                model, example, str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_axes=axes, do_constant_folding=True,
            )
