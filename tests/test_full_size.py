"""Full-size networks (slow: minutes on 2 cores). Run with ``pytest -m slow``."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from psdeploy.export import export_onnx
from psdeploy.load import load_model
from tests.conftest import ONNXRUNTIME_TOL, assert_runs_like_torch


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ps_resnet50", "ps_resnet101", "ps_resnext101_32x4d"])
def test_full_size_export_parity(tmp_path, arch) -> None:
    """The exported file itself, run by onnxruntime, against the checkpoint's module (the test's own check)."""
    loaded = load_model(f"seeded:{arch}")
    path = tmp_path / f"{arch}.onnx"
    export_onnx(loaded, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    assert_runs_like_torch(lambda x: session.run(None, {name: x}), loaded.model, (1, 3, 224, 224), ONNXRUNTIME_TOL)
