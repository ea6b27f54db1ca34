"""Conv by conv across runtimes: TVM kernels and onnxruntime nodes placed on the same convs, with their work."""

from __future__ import annotations

from pathlib import Path

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
    result = CliRunner().invoke(main, ["profile", str(artifact), "--against", str(onnx_path), "--runs", "2",
                                       "--rounds", "3"])
    assert result.exit_code == 0, result.output
    assert "convs: tvm on tvm llvm" in result.output and "speed of plain.onnx (p10-p90)" in result.output
    assert "median of 3 rounds" in result.output and "profiled time" in result.output
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


def test_profile_against_alternates_rounds_and_bands_each_conv() -> None:
    """Each round profiles both models, the first model first in even rounds and second in odd ones; a conv's
    share is taken within a round, its median and p10-p90 band over the rounds; medians ignore one slow load."""
    from psdeploy.backends.base import ConvTime, NodeTime, Profile
    from psdeploy.bench.paired_profile import profile_pair
    from psdeploy.export.counts import ConvKey

    fast, slow, only_mine = ConvKey(64, 56, 56, 576), ConvKey(128, 28, 28, 1152), ConvKey(2048, 7, 7, 512)
    # per call of each model, its convs' ms: the first model's ``slow`` conv is 2x the other's in every round
    # but the third, where a slow load makes it 10x
    mine_ms = iter([(1.0, 2.0), (1.0, 2.0), (1.0, 10.0), (1.0, 2.0), (1.0, 2.0)])
    calls = []

    def profile_one(path):
        calls.append(path.name)
        if path.name == "a":
            f, s = next(mine_ms)
            convs = [ConvTime(fast, f, 1, 1e6), ConvTime(slow, s, 1, 1e6), ConvTime(only_mine, 0.5, 1, 1e6)]
        else:
            f, s = 1.25, 1.0
            convs = [ConvTime(fast, f, 1, 1e6), ConvTime(slow, s, 1, 1e6)]
        nodes = [NodeTime(f"conv{i}", "Conv", "k", c.ms_per_run, 1) for i, c in enumerate(convs)]
        return Profile(path.name, "cpu", 1, 2, nodes, convs)

    pair = profile_pair(profile_one, Path("a"), Path("b"), rounds=5)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    rows = {row.mine.key: row for row in pair.convs}
    assert rows[fast].share == pytest.approx(1.25) and rows[fast].band == pytest.approx((1.25, 1.25))
    assert rows[slow].share == pytest.approx(0.5) and rows[slow].mine.ms_per_run == pytest.approx(2.0)
    assert rows[slow].band[0] < 0.5 == pytest.approx(rows[slow].band[1])  # the slow load widens the band only
    assert rows[only_mine].share is None and rows[only_mine].theirs is None
    assert pair.first.total_ms == pytest.approx(3.5) and pair.other.total_ms == pytest.approx(2.25)
    assert pair.total_ratio[0] == pytest.approx(3.5 / 2.25) and pair.rounds == 5


def test_rounds_need_a_second_model(plain_digits) -> None:
    _, artifact = plain_digits
    result = CliRunner().invoke(main, ["profile", str(artifact), "--rounds", "3"])
    assert result.exit_code == 2 and result.output.strip() == (
        "error: --rounds: only with --against (rounds alternate two models)")


def test_an_openvino_artifact_places_its_convs_as_its_onnx_does(plain_digits, tmp_path) -> None:
    """OpenVINO's IR keeps the ONNX node names its per-node counters report: an OpenVINO artifact's conv nodes
    land on the same conv keys, with the same work, as the ONNX file's on onnxruntime; and a TVM artifact is
    set conv by conv beside an ONNX file run on OpenVINO (``--on`` names the ONNX file's runtime)."""
    pytest.importorskip("openvino")
    onnx_path, artifact = plain_digits
    api.compile(str(onnx_path), target="openvino-cpu", output=tmp_path / "ov")
    ov_side, ort_side = api.profile(tmp_path / "ov", runs=2), api.profile(onnx_path, runs=2)
    assert {t.key for t in ov_side.convs} == {t.key for t in ort_side.convs}
    assert sum(t.flops_per_run for t in ov_side.convs) == pytest.approx(2 * count_file(str(onnx_path)).conv_macs)
    result = CliRunner().invoke(main, ["profile", str(artifact), "--against", str(onnx_path), "--on", "openvino-cpu",
                                       "--runs", "2", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "vs plain.onnx on openvino-cpu (f32)" in result.output and "16@32x32 r27" in result.output
