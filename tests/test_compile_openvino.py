"""OpenVINO CPU artifacts: fp32 kept, verified, atomic, and every bad input refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from psdeploy import api
from psdeploy.backends import Manifest, open_runner
from psdeploy.verify import verify_artifact
from psdeploy.errors import PsdeployError
from psdeploy.export import export_onnx
from psdeploy.load import load_model
from psdeploy.verify.accuracy import held_out_top1
from psdeploy.parity.runners import torch_runner
from tests.conftest import DEMO_CHECKPOINT, OPENVINO_TOL, assert_runs_like_torch

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ov_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "demo-ov"
    api.compile(str(DEMO_CHECKPOINT), target="openvino-cpu", output=out, input_shape=(8, 3, 32, 32))
    return out


def test_artifact_layout_and_manifest(ov_artifact) -> None:
    manifest = Manifest.read(ov_artifact)
    assert sorted(p.name for p in ov_artifact.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert manifest.backend == "openvino" and manifest.precision == "f32"
    assert manifest.parity["passed"] and manifest.parity["worst_rel_err"] <= OPENVINO_TOL
    assert manifest.source_sha256 == load_model(DEMO_CHECKPOINT).sha256
    assert manifest.versions["openvino"] != "not installed"
    assert not list(ov_artifact.parent.glob(".*partial"))


def test_fp32_is_kept(ov_artifact) -> None:
    runner = open_runner(ov_artifact)
    assert "f32" in runner.description
    assert_runs_like_torch(runner.run, load_model(DEMO_CHECKPOINT).model, (8, 3, 32, 32), OPENVINO_TOL)
    xml = (ov_artifact / "model.xml").read_text()
    assert 'element_type="f16"' not in xml  # no compress_to_fp16


def test_top1_agrees_on_held_out_split(ov_artifact) -> None:
    accuracy = Manifest.read(ov_artifact).accuracy
    assert accuracy["prediction_agreement"] == 1.0 and accuracy["samples"] == 450
    runner = open_runner(ov_artifact)
    report = held_out_top1(torch_runner(load_model(DEMO_CHECKPOINT).model), runner.run, runner.batch)
    assert report.agree


def test_verify_against_checkpoint(ov_artifact) -> None:
    """verify's verdict and its worst error, beside the test's own run of the artifact (test_fp32_is_kept)."""
    report = verify_artifact(ov_artifact, str(DEMO_CHECKPOINT))
    assert report.passed and report.worst.rel_err <= OPENVINO_TOL


def test_verify_against_other_checkpoint_refused(ov_artifact) -> None:
    with pytest.raises(PsdeployError, match="differs from the artifact's source"):
        verify_artifact(ov_artifact, "seeded:ps_resnet_digits@9")


def test_existing_output_refused_without_force(ov_artifact) -> None:
    with pytest.raises(PsdeployError, match="already exists; pass --force"):
        api.compile(str(DEMO_CHECKPOINT), target="openvino-cpu", output=ov_artifact)


def test_force_replaces(tmp_path) -> None:
    out = tmp_path / "a"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=out, force=True)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").exists()


def test_compile_from_exported_onnx(tmp_path) -> None:
    exported = export_onnx(load_model("seeded:ps_resnet_digits@2"), tmp_path / "m.onnx")
    result = api.compile(str(exported.path), target="openvino-cpu", output=tmp_path / "ov")
    assert result.parity.reference == "checkpoint (torch)"  # the seeded source is found again by its hash


def test_foreign_onnx_refused(tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(PsdeployError, match="not a PS-ResNet/ResNet exported by psdeploy"):
        api.compile(str(path), target="openvino-cpu", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_compile_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "ov"
    with pytest.raises(PsdeployError):
        api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=out, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_bad_precision_refused(tmp_path) -> None:
    with pytest.raises(PsdeployError, match="--precision 'int4'"):
        api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=tmp_path / "ov", precision="int4")
    assert list(tmp_path.iterdir()) == []


def test_manifest_is_json(ov_artifact) -> None:
    data = json.loads((ov_artifact / "manifest.json").read_text())
    assert data["input_shape"] == [8, 3, 32, 32] and data["output_names"] == ["logits"]


def test_profile_reads_openvino_per_node_counters(ov_artifact) -> None:
    from psdeploy import api

    result = api.profile(ov_artifact, runs=2, threads=1)
    rows = result.nodes
    assert result.runs_on == "openvino-cpu (f32)"
    convs = [r for r in rows if r.op_type in ("Convolution", "GroupConvolution")]
    assert convs and all(r.kernel and r.calls_per_run == 1 for r in convs)  # e.g. brgconv_avx2_f32
    assert abs(sum(r.share for r in rows) - 1) < 1e-6 and sum(r.ms_per_run for r in rows) > 0


def test_a_fused_file_opens_in_openvino_too(tmp_path) -> None:
    """One file for every runtime: OpenVINO converts the PSConv node as its ONNX function body says."""
    from psdeploy import api

    fused = tmp_path / "fused.onnx"
    api.export("seeded:ps_resnet_digits@3", fused, lowering="fused")
    result = api.compile(str(fused), target="openvino-cpu", output=tmp_path / "ov")
    assert result.parity.passed and result.manifest.lowering == "fused"
    model = load_model("seeded:ps_resnet_digits@3").model
    assert_runs_like_torch(open_runner(tmp_path / "ov").run, model, (1, 3, 32, 32), OPENVINO_TOL)
