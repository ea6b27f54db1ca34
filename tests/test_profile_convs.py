"""Conv by conv across runtimes: TVM kernels and onnxruntime nodes placed on the same convs, with their work."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.cli import main
from psdeploy.export import export_onnx
from psdeploy.export.counts import count_file
from psdeploy.load import load_model

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def plain_digits(tmp_path_factory):
    """The plain digits ResNet as ONNX and as an untuned blocked TVM artifact."""
    out = tmp_path_factory.mktemp("convs")
    onnx_path = out / "plain.onnx"
    export_onnx(load_model("seeded:resnet_digits", None), onnx_path)
    api.compile(str(onnx_path), target="llvm", output=out / "tvm", layout="nchwc", tuning_db=out / "db", untuned=True)
    return onnx_path, out / "tvm"


def test_both_runtimes_account_for_every_multiply_add_of_the_convs(plain_digits) -> None:
    """The kernels' recorded work, times the calls the VM made, is the graph's conv multiply-adds exactly;
    onnxruntime's conv nodes add up to the same, on the same conv keys."""
    onnx_path, artifact = plain_digits
    macs = count_file(str(onnx_path)).conv_macs
    tvm_side, ort_side = api.profile(artifact, runs=2), api.profile(onnx_path, runs=2)
    assert sum(t.flops_per_run for t in tvm_side.convs) == pytest.approx(2 * macs)
    assert sum(t.flops_per_run for t in ort_side.convs) == pytest.approx(2 * macs)
    assert {t.key for t in tvm_side.convs} == {t.key for t in ort_side.convs}
    assert all(t.gflops > 0 for t in tvm_side.convs + ort_side.convs)


def test_profile_against_sets_conv_beside_conv(plain_digits) -> None:
    onnx_path, artifact = plain_digits
    result = CliRunner().invoke(main, ["profile", str(artifact), "--against", str(onnx_path), "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "convs: tvm on tvm llvm" in result.output and "speed of plain.onnx" in result.output
    assert "16@32x32 r27" in result.output  # the stem: 16 channels out, 3 x 3x3 in
    assert "convs below 80% of plain.onnx's speed" in result.output


def test_a_psconv_kernel_counts_the_multiply_adds_of_every_slot(tmp_path) -> None:
    """A blocked PSConv kernel sums four slots: its recorded work is the layer's 3x3 multiply-adds, so the
    kernels add up to the graph's (PSConv nodes counted as the 3x3 convs they are)."""
    onnx_path = tmp_path / "fused.onnx"
    export_onnx(load_model("seeded:ps_resnet_digits", None), onnx_path, "fused")
    result = api.compile(str(onnx_path), target="llvm", mcpu="haswell", output=tmp_path / "tvm", layout="nchwc",
                         tuning_db=tmp_path / "db", untuned=True)
    assert any(k.op == "psconv_fused" for k in result.manifest.kernels.values())
    profiled = api.profile(tmp_path / "tvm", runs=1)
    assert sum(t.flops_per_run for t in profiled.convs) == pytest.approx(2 * count_file(str(onnx_path)).conv_macs)
