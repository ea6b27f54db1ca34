"""--lowering auto: every candidate verified, the fastest kept per geometry, the choice applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psdeploy import api
from psdeploy.arch.seeded import seeded_model
from psdeploy.errors import PsdeployError
from psdeploy.rewrite.deploy import rewrite
from psdeploy.search import layer_geometries
from tests.conftest import REWRITE_TOL, relative_error


def test_geometries_of_ps_resnet50() -> None:
    found = layer_geometries(seeded_model("ps_resnet50"), (1, 3, 224, 224))
    labels = [g.label for g in found]
    assert labels == ["64@56x56 s1 g1", "128@56x56 s2 g1", "128@28x28 s1 g1", "256@28x28 s2 g1",
                      "256@14x14 s1 g1", "512@14x14 s2 g1", "512@7x7 s1 g1"]
    assert sum(len(v) for v in found.values()) == 16


def test_mixed_choices_are_exact() -> None:
    model = seeded_model("ps_resnet_digits", seed=2)
    choices = {"layer1.0": "polyphase", "layer2.0": "polyphase", "layer3.1": "grouped"}
    result = rewrite(model, "grouped", choices)
    assert [r.lowering for r in result.layers][:3] == ["polyphase", "grouped", "polyphase"]
    x = torch.randn(2, 3, 31, 33)
    with torch.no_grad():
        assert relative_error(result.model(x), model(x)) < REWRITE_TOL


def test_unknown_choice_refused() -> None:
    with pytest.raises(PsdeployError, match="unknown lowering"):
        rewrite(seeded_model("ps_resnet_digits"), "grouped", {"layer1.0": "winograd9"})


def test_export_auto_records_search(tmp_path) -> None:
    """The search's rows and per-layer choices travel in the file's export record, and compiling the export
    (its result or its path) records them in the manifest."""
    import onnx

    from psdeploy.export import ExportRecord

    result = api.export("seeded:ps_resnet_digits", tmp_path / "auto.onnx", lowering="auto")
    assert result.onnx_parity.passed
    rows = result.search
    candidates = ("grouped", "sliced", "aligned", "polyphase")
    assert len(rows) == 5 and all(set(r.timings_ms) == {"plain", *candidates} for r in rows)
    chosen = {layer: row.lowering for row in rows for layer in row.layers}
    assert chosen == {r.name: r.lowering for r in result.deploy.layers}
    assert all(row.timings_ms[row.lowering] == min(row.timings_ms[n] for n in candidates) for row in rows)
    record = ExportRecord.read(onnx.load(str(tmp_path / "auto.onnx"), load_external_data=False), "auto.onnx")
    assert record == result.record and record.lowering == "auto" and record.choices == chosen
    for source in (result, tmp_path / "auto.onnx"):
        out = tmp_path / f"ort{len(str(source))}"
        compiled = api.compile(source, target="onnxruntime-cpu", output=out)
        assert compiled.manifest.lowering == "auto" and compiled.manifest.lowering_search == rows


@pytest.mark.parametrize("target_name", ["onnxruntime-cpu", "openvino-cpu", "llvm"])
def test_timed_candidates_leave_no_files_behind(target_name, tmp_path, monkeypatch) -> None:
    """Searches and reports build hundreds of candidates: each export and artifact lives in the caller's scratch
    directory while it is loaded anew for each load, and goes with it; a load opened before still runs."""
    import tempfile

    import numpy as np

    from psdeploy.backends import BuildOptions, parse_target
    from psdeploy.search.prepare import prepare_on_target

    pytest.importorskip({"openvino-cpu": "openvino", "llvm": "tvm"}.get(target_name, "onnxruntime"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    conv = torch.nn.Conv2d(8, 8, 3, 1, 2, 2, groups=2).eval()
    options = BuildOptions(untuned=target_name == "llvm")  # TVM: built from no tuning, as the user asked
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare_on_target(conv, conv, (1, 8, 9, 9), parse_target(target_name), options, 1, "conv",
                                     Path(scratch))
        first, second = prepared.open(), prepared.open()
    assert [p for p in tmp_path.iterdir() if not p.name.startswith("torchinductor")] == []  # torch's own cache
    assert prepared.parity.passed and all(np.isfinite(run()[0]).all() for run in (first, second))
