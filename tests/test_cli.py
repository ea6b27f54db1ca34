"""The CLI: real commands, one-line errors, non-zero exits."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from psdeploy.cli import main
from tests.conftest import DEMO_CHECKPOINT


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_inspect_demo() -> None:
    result = _run("inspect", str(DEMO_CHECKPOINT))
    assert result.exit_code == 0, result.output
    assert "ps_resnet_digits" in result.output and "6/6 layers clean" in result.output


def test_export_cli(tmp_path) -> None:
    out = tmp_path / "d.onnx"
    result = _run("export", str(DEMO_CHECKPOINT), "-o", str(out), "--opset", "18")
    assert result.exit_code == 0, result.output
    assert out.is_file() and "rel err" in result.output


def test_bad_checkpoint_is_one_line_error(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    result = _run("export", str(bad), "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.pth" in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_bad_input_shape(tmp_path) -> None:
    result = _run("export", str(DEMO_CHECKPOINT), "-o", str(tmp_path / "x.onnx"), "--input-shape", "1,1,32,32")
    assert result.exit_code == 2 and "--input-shape" in result.output


def test_unknown_lowering(tmp_path) -> None:
    result = _run("export", str(DEMO_CHECKPOINT), "-o", str(tmp_path / "x.onnx"), "--lowering", "magic")
    assert result.exit_code == 2 and "--lowering 'magic'" in result.output


def test_wrong_arch_flag(tmp_path) -> None:
    path = tmp_path / "c.pth"
    torch.save(torch.load(DEMO_CHECKPOINT, weights_only=True), path)
    result = _run("inspect", str(path), "--arch", "resnet_digits")
    assert result.exit_code == 2 and "does not fit resnet_digits" in result.output


def test_bench_interleaves_and_writes_json(tmp_path) -> None:
    import json

    from psdeploy.export import export_onnx
    from psdeploy.load import load_model

    a = export_onnx(load_model("seeded:resnet_digits"), tmp_path / "plain.onnx", dynamic_batch=True).path
    b = export_onnx(load_model("seeded:ps_resnet_digits"), tmp_path / "ps.onnx", dynamic_batch=True).path
    out = tmp_path / "bench.json"
    result = _run("bench", str(a), str(b), "--batch", "1,2", "--iters", "30", "--warmup", "2", "--threads", "1",
                  "--loads", "3", "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("plain.onnx", 1), ("ps.onnx", 1), ("plain.onnx", 2),
                                                         ("ps.onnx", 2)]
    assert rows[0]["ratio_to_first"] == 1.0 and all(r["iterations"] == 2 * 30 for r in rows)  # two timed runs a round
    assert report["loads"] == 3 and all(len(r["load_ratios"]) == len(r["load_medians_ms"]) == 3 for r in rows)
    assert all(sum(m["loads"] for m in r["modes"]) == 3 for r in rows)


def test_bench_refuses_more_loads_than_its_rounds_fill(tmp_path) -> None:
    result = _run("bench", str(DEMO_CHECKPOINT), "--iters", "30", "--loads", "7")
    assert result.exit_code == 2 and "--loads 7: 30 timed rounds give fewer than 5 per load" in result.output


def test_bench_refuses_too_few_iterations(tmp_path) -> None:
    result = _run("bench", str(DEMO_CHECKPOINT), "--iters", "5")
    assert result.exit_code == 2 and "5 is not in the range x>=30" in result.output


def test_profile_splits_kernel_time_by_operator(tmp_path) -> None:
    from psdeploy import api

    out = tmp_path / "d.onnx"
    assert _run("export", str(DEMO_CHECKPOINT), "-o", str(out), "--dynamic-batch").exit_code == 0
    result = api.profile(out, 2, runs=3, threads=1)
    by_node = result.nodes
    assert result.runs_on == "onnxruntime" and result.batch == 2 and abs(sum(r.share for r in by_node) - 1) < 1e-6
    calls = {r.op_type: r.calls_per_run for r in result.by_op_type(split_kernels=False)}
    assert calls["Gather"] == 12  # two per PSConv layer, six layers
    assert result.by_op_type()[0].op_type == "Conv" and result.by_op_type()[0].kernel == "CPUExecutionProvider"
    assert result.layout_reorders[0] == calls.get("ReorderInput", 0) + calls.get("ReorderOutput", 0)
    result = _run("profile", str(out), "--batch", "2", "--runs", "3", "--threads", "1")
    assert result.exit_code == 0 and "Conv" in result.output and "total" in result.output
    static = tmp_path / "s.onnx"
    assert _run("export", str(DEMO_CHECKPOINT), "-o", str(static)).exit_code == 0
    bad = CliRunner().invoke(main, ["profile", str(static), "--batch", "4"])
    assert bad.exit_code == 2 and "--dynamic-batch" in bad.output


def test_profile_on_openvino_against_the_plain_network(tmp_path) -> None:
    """The PS network vs its plain counterpart on OpenVINO's own counters: per type, side by side."""
    pytest.importorskip("openvino")
    from psdeploy import api

    ps, plain = tmp_path / "ps.onnx", tmp_path / "plain.onnx"
    api.export("seeded:ps_resnet_digits", ps)
    api.export("seeded:resnet_digits", plain)
    result = api.profile(ps, runs=2, threads=1, on="openvino-cpu")
    assert result.runs_on == "openvino-cpu (f32)"
    kinds = {r.op_type for r in result.nodes}
    # OpenVINO runs a Gather as such, or fused with its neighbours into a "Subgraph" (snippets; on Zen 5)
    assert "GroupConvolution" in kinds and kinds & {"Gather", "Subgraph"} and all(r.kernel for r in result.nodes)
    assert result.layout_reorders[0] == sum(r.calls_per_run for r in result.nodes if r.op_type == "Reorder")
    shown = _run("profile", str(ps), "--on", "openvino-cpu", "--against", str(plain), "--runs", "2", "--threads", "1")
    assert shown.exit_code == 0, shown.output
    assert "ps.onnx vs plain.onnx on openvino-cpu (f32)" in shown.output and "GroupConvolution" in shown.output
    assert "layout reorders" in shown.output


@pytest.mark.parametrize("on", ["onnxruntime-cpu", "openvino-cpu"])
def test_profile_sums_each_psconv_layer(tmp_path, on) -> None:
    """Every node the runtime ran, its own layout reorders included, lands in a network layer: the six
    PSConv layers (``conv2``) beside the plain 3x3s they replace."""
    if on == "openvino-cpu":
        pytest.importorskip("openvino")
    from psdeploy import api

    ps, plain = tmp_path / "ps.onnx", tmp_path / "plain.onnx"
    api.export("seeded:ps_resnet_digits", ps)
    api.export("seeded:resnet_digits", plain)
    result = api.profile(ps, runs=2, threads=1, on=on)
    layers = {r.name: r for r in result.by_layer()}
    psconv = sorted(n for n in layers if n.endswith(".conv2"))
    assert len(psconv) == 6 and all("Conv" in layers[n].op_type for n in psconv)  # GroupConvolution on OpenVINO
    # a runtime may fuse some into a neighbour (OpenVINO's snippets: a "Subgraph")
    assert any("Gather" in layers[n].op_type or "Subgraph" in layers[n].op_type for n in psconv)
    assert "(runtime)" not in layers and abs(sum(r.ms_per_run for r in layers.values()) - result.total_ms) < 1e-9
    assert sum(layers[n].calls_per_run for n in psconv) >= 6 * 5  # three convs and two gathers each, at least
    shown = _run("profile", str(ps), "--on", on, "--against", str(plain), "--layers", "--runs", "2", "--threads", "1")
    assert shown.exit_code == 0, shown.output
    assert "ms per run per layer" in shown.output and "3x3 layers (conv2):" in shown.output


def test_verbose_lets_third_party_warnings_through() -> None:
    import warnings

    from psdeploy.quiet import quiet, set_verbose

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet("torch.onnx"):
            warnings.warn("exporter chatter", UserWarning)
        assert not caught
        set_verbose(True)
        try:
            with quiet("torch.onnx"):
                warnings.warn("exporter chatter", UserWarning)
        finally:
            set_verbose(False)
        assert [str(w.message) for w in caught] == ["exporter chatter"]
    assert _run("-v", "inspect", str(DEMO_CHECKPOINT)).exit_code == 0


def test_the_bench_table_prints_whole_model_names_when_loads_disagree(monkeypatch) -> None:
    """Loads at two speeds add their modes to the table, which then takes an 80-column terminal's whole width:
    the model names still print whole (the other columns wrap), or two builds could not be told apart."""
    import io

    from rich.console import Console

    from psdeploy.bench import BenchResult, BenchRow
    from psdeploy.bench.stats import pool_loads
    from psdeploy.bench.timing import TimingPlan
    from psdeploy.cli import render

    out = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=out, width=80, highlight=False))
    monkeypatch.setattr(render, "err_console", Console(file=io.StringIO(), width=80))
    loads = [[10.0, 10.1, 10.2]] * 2 + [[15.0, 15.1, 15.2]] * 2
    names = ["resnet50-openvino-int8-build", "ps_resnet50-openvino-int8-build"]
    rows = [BenchRow(name, 1, pool_loads(loads, loads, loads), runs_on="openvino CPU") for name in names]
    environment = {"cpu_model": "cpu", "cpu_flags": "", "cores": 2, "governor": "-", "gpu": "none"}
    render.show_bench(BenchResult(rows, TimingPlan(), len(loads), environment), threads=2)
    assert rows[0].pooled.load_dependent and all(name in out.getvalue() for name in names)
