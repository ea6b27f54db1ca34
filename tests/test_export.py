"""ONNX export: verified, counted from the graph, and atomic."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from psdeploy.errors import PsdeployError, VerificationError
from psdeploy.export import export_onnx
from psdeploy.export.counts import count_graph
from psdeploy.load import load_model
from psdeploy.verify.accuracy import held_out_top1
from psdeploy.parity.runners import onnxruntime_runner, torch_runner
from tests.conftest import DEMO_CHECKPOINT, ONNXRUNTIME_TOL, REWRITE_TOL


@pytest.fixture(scope="module")
def exported_pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    ps = export_onnx(load_model("seeded:ps_resnet_digits@1"), out / "ps.onnx", dynamic_batch=True)
    plain = export_onnx(load_model("seeded:resnet_digits@1"), out / "plain.onnx", dynamic_batch=True)
    return ps, plain


def test_export_verified_and_counted(exported_pair) -> None:
    ps, plain = exported_pair
    assert ps.path.is_file() and ps.onnx_parity.passed and ps.rewrite_parity.passed
    assert ps.rewrite_parity.worst.rel_err <= REWRITE_TOL and ps.onnx_parity.worst.rel_err <= ONNXRUNTIME_TOL
    shapes = {c.input_shape for c in ps.rewrite_parity.cases}
    assert (1, 3, 33, 31) in shapes  # odd sizes reach every stride-2 block
    assert {c.input_shape[0] for c in ps.onnx_parity.cases} == {1, 3}  # dynamic batch exercised
    assert ps.graph.params == plain.graph.params
    assert ps.graph.conv_macs == plain.graph.conv_macs
    assert ps.graph.gathers == 2 * 6 and plain.graph.gathers == 0  # two shuffles per PSConv layer
    assert ps.released_macs > ps.graph.macs
    ops = set(ps.graph.ops)
    assert ops <= {"Conv", "Add", "Relu", "Gather", "ReduceMean", "Reshape", "Gemm", "Flatten",
                   "GlobalAveragePool", "MaxPool"}


def test_graph_counts_match_torch(exported_pair) -> None:
    ps, _ = exported_pair
    from psdeploy.export.counts import count_torch

    params, macs = count_torch(ps.deploy.model, ps.input_shape)
    assert (ps.graph.params, ps.graph.macs) == (params, macs)


def test_reference_lowering_exports_released_form(tmp_path) -> None:
    result = export_onnx(load_model("seeded:ps_resnet_digits@1"), tmp_path / "ref.onnx", lowering="reference")
    assert result.graph.macs == result.released_macs  # 1.5x conv2, counted from the graph
    assert result.onnx_parity.passed


def test_opset_17_uses_torchscript_exporter(tmp_path) -> None:
    result = export_onnx(load_model("seeded:ps_resnet_digits@1"), tmp_path / "m17.onnx", opset=17)
    model = onnx.load(str(result.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert result.onnx_parity.passed


def test_failed_verification_leaves_no_file(tmp_path) -> None:
    target = tmp_path / "net.onnx"
    with pytest.raises(VerificationError, match="parity check failed"):
        export_onnx(load_model("seeded:ps_resnet_digits@1"), target, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, expect", [("a_file/net.onnx", "a_file is not a directory"),
                                          (".", "already exists; pass --force")])
def test_unwritable_output(tmp_path, name, expect) -> None:
    (tmp_path / "a_file").write_text("a file, not a folder")
    with pytest.raises(PsdeployError, match="^-o .*" + expect):
        export_onnx(load_model("seeded:ps_resnet_digits@1"), tmp_path / name)


def test_backbone_export_has_four_stage_outputs(tmp_path) -> None:
    from psdeploy.arch.seeded import seeded_model
    from psdeploy.load.loader import LoadedModel

    model = seeded_model("ps_resnet_digits", num_classes=None)
    loaded = LoadedModel(model, model.cfg, "seeded", "x")
    result = export_onnx(loaded, tmp_path / "bb.onnx")
    assert [o.name for o in onnx.load(str(result.path)).graph.output] == ["C2", "C3", "C4"]
    assert len(result.onnx_parity.cases[0].outputs) == 3


def test_demo_checkpoint_top1_agrees(tmp_path) -> None:
    loaded = load_model(DEMO_CHECKPOINT)
    result = export_onnx(loaded, tmp_path / "demo.onnx", dynamic_batch=True)
    report = held_out_top1(torch_runner(loaded.model), onnxruntime_runner(result.path), batch=64)
    assert report.agree and report.reference_top1 > 0.95


def test_count_graph_counts_conv_exactly(tmp_path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 2, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    counts = count_graph(helper.make_model(graph))
    assert counts.params == 8 * 2 * 9 and counts.conv_macs == 8 * 5 * 7 * 2 * 9
