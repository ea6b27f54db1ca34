"""Full-size networks (slow: minutes on 2 cores). Run with ``pytest -m slow``."""

from __future__ import annotations

import pytest

from psdeploy.export import export_onnx
from psdeploy.load import load_model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ps_resnet50", "ps_resnet101", "ps_resnext101_32x4d"])
def test_full_size_export_parity(tmp_path, arch) -> None:
    result = export_onnx(load_model(f"seeded:{arch}"), tmp_path / f"{arch}.onnx")
    assert result.rewrite_parity.passed and result.onnx_parity.passed
