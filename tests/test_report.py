"""Reports: produced, well-formed, verified before timing; the gate flags only changes beyond noise.
(Latencies are never asserted: speed is checked by benchmarks, not unit tests.)"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from psdeploy.arch.seeded import seeded_model
from psdeploy.bench.stats import LatencyStats, ratio_spread
from psdeploy.errors import PsdeployError
from psdeploy.report import compare_reports, run_report, to_json, write_report
from psdeploy.report.cases import LayerSpec, Role, layer_cases
from psdeploy.report.config import ReportConfig, load_report_config
from psdeploy.report.run import SCHEMA
from tests.conftest import ONNXRUNTIME_TOL, REPO, REWRITE_TOL, relative_error


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    config = ReportConfig(name="tiny", threads=1, backends=["torch", "onnxruntime"], warmup=2, max_warmup=4,
                          iters=30, layer_shapes=[(16, 9)], layer_strides=[1, 2], layer_batches=[1],
                          network_pairs=[("ps_resnet_digits", "resnet_digits")], network_batches=[2],
                          network_lowerings=["grouped", "auto"])
    data = run_report(config)
    out = tmp_path_factory.mktemp("report") / "tiny"
    write_report(data, out)
    return data, out


def test_report_files_well_formed(tiny_report) -> None:
    data, out = tiny_report
    payload = json.loads((out / "report.json").read_text())
    assert payload["schema"] == SCHEMA and payload["environment"]["packages"]["torch"]
    layer = [m for m in payload["measurements"] if m["table"] == "layer"]
    assert {m["case"] for m in layer} == {"plain", "dilated2", "dilated4", "psconv_released", "psconv_grouped"}
    assert all(m["stats"]["iterations"] >= 30 for m in payload["measurements"])
    assert all(m["parity_rel_err"] <= ONNXRUNTIME_TOL for m in payload["measurements"])
    plain = [m for m in layer if m["case"] == "plain"]
    assert all(m["ratio"] == 1.0 for m in plain)
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == len(payload["measurements"])
    md = (out / "report.md").read_text()
    assert "## Layer table" in md and "## Network table" in md and "1.42x" in md and "interleaved" in md
    assert (out / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_times_auto_as_searched_on_each_runtime(tiny_report) -> None:
    """``auto`` at network level is the network ``--lowering auto`` builds for that runtime, verified like
    every case, and the report says what its search kept; eager PyTorch has no runtime to search on."""
    data, _ = tiny_report
    network = [m for m in data.measurements if m.table == "network"]
    auto = [m for m in network if m.lowering == "auto"]
    assert [m.backend for m in auto] == ["onnxruntime"] and auto[0].parity_rel_err <= ONNXRUNTIME_TOL
    kept = dict(part.rsplit(" ", 1) for part in auto[0].chosen.split(", "))
    assert set(kept) <= {"grouped", "sliced", "aligned", "polyphase"} and sum(map(int, kept.values())) == 6
    assert all(m.chosen is None for m in network if m.lowering != "auto")


def test_report_recipe_unknown_network_lowering(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("networks: {pairs: [[ps_resnet_digits, resnet_digits]], lowerings: [grouped, fastest]}\n")
    with pytest.raises(PsdeployError, match="'networks.lowerings': value error, unknown lowering 'fastest'"):
        load_report_config(path, None)


def test_report_check(tiny_report, tmp_path) -> None:
    import shutil

    from psdeploy.report.check import check_report

    _, out = tiny_report
    assert check_report(out) == len(json.loads((out / "report.json").read_text())["measurements"])
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "report.csv").write_text("table\n")
    with pytest.raises(PsdeployError, match="report.csv"):
        check_report(broken)


def test_layer_cases_compute_the_same_psconv() -> None:
    spec = LayerSpec(32, 11, 2, 2)
    cases = {c.case.label: c for c in layer_cases(spec, ["grouped"])}
    x = torch.randn(spec.shape)
    released = cases["psconv_released"].module
    deployed, reference = cases["psconv_grouped"].module, cases["psconv_grouped"].reference
    assert cases["psconv_grouped"].case.role is Role.DEPLOYED and cases["psconv_grouped"].case.lowering == "grouped"
    with torch.no_grad():
        assert relative_error(deployed(x), reference(x)) < REWRITE_TOL
        assert reference(x).shape == released(x).shape


def test_compare_flags_only_changes_beyond_noise(tiny_report, tmp_path) -> None:
    data, out = tiny_report
    payload = to_json(data)
    assert not any(c.worse for c in compare_reports(out / "report.json", payload))
    worse = json.loads(json.dumps(payload))
    target = next(m for m in worse["measurements"] if m["case"] == "psconv_released")
    shift = 2 * target["ratio_p90"] - target["ratio_p10"]  # the whole band moved above where it was, however wide
    for key in ("ratio", "ratio_p10", "ratio_p90"):
        target[key] += shift
    flagged = [c for c in compare_reports(out / "report.json", worse) if c.worse]
    assert len(flagged) == 1 and "psconv_released" in flagged[0].key


def test_compare_reads_reports_from_before_precisions(tmp_path, tiny_report) -> None:
    """A ``psdeploy.report/1`` file has no precision: its figures are fp32 and meet this report's f32 ones."""
    payload = to_json(tiny_report[0])
    old = json.loads(json.dumps(payload))
    old["schema"] = "psdeploy.report/1"
    for m in old["measurements"]:
        del m["precision"], m["mean_cosine"], m["int8_convs"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert len(compare_reports(path, payload)) == len(payload["measurements"])


def test_compare_refuses_other_schema(tmp_path, tiny_report) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "other/9", "measurements": []}))
    with pytest.raises(PsdeployError, match="schema"):
        compare_reports(path, to_json(tiny_report[0]))


def test_shipped_report_recipes_parse() -> None:
    for path in (REPO / "recipes" / "reports").glob("*.yaml"):
        config = load_report_config(path, None)
        assert config.backends and config.iters >= 30


def test_report_tvm_time_budget(tmp_path) -> None:
    from psdeploy.report.config import platform

    path = tmp_path / "r.yaml"
    path.write_text("backends: [tvm-llvm-nhwc]\ntvm: {time: 90s, trials: 500}\n")
    config = load_report_config(path, None)
    assert (config.tvm_time_s, config.tvm_trials) == (90.0, 500) and not config.tvm_untuned
    path.write_text("backends: [tvm-llvm]\ntvm: {time: soon}\n")
    with pytest.raises(PsdeployError, match="'tvm.time': value error, expected a positive duration"):
        load_report_config(path, None)
    path.write_text("backends: [tvm-llvm]\ntvm: {untuned: true}\n")
    pytest.importorskip("tvm")  # parses the llvm target
    assert platform("tvm-llvm", load_report_config(path, None)).options.untuned  # no budget: asked for untuned


def test_network_tables_on_a_subset_of_backends(tmp_path) -> None:
    from psdeploy.report.config import platform
    from psdeploy.report.run import _groups, _runs_on

    path = tmp_path / "r.yaml"
    path.write_text("backends: [torch, onnxruntime]\nlayers: {shapes: [[16, 9]], cases: [plain]}\n"
                    "networks: {pairs: [[ps_resnet_digits, resnet_digits]], backends: [onnxruntime]}\n")
    config = load_report_config(path, None)
    runs = [(name, group.table) for name in config.backends for group in _groups(config)
            if _runs_on(group, platform(name, config), config)]
    assert runs == [("torch", "layer"), ("onnxruntime", "layer"), ("onnxruntime", "network")]
    path.write_text("backends: [torch]\nnetworks: {pairs: [[ps_resnet_digits, resnet_digits]], backends: [openvino]}\n")
    with pytest.raises(PsdeployError, match="'networks.backends': 'openvino' is not one of the report's backends"):
        load_report_config(path, None)


def test_report_recipe_bad_backend(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("backends: [torch, tensorrt]\n")
    with pytest.raises(PsdeployError, match="'backends.1': input should be 'torch', 'onnxruntime'"):
        load_report_config(path, None)


def test_report_recipe_layer_cases(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("backends: [torch]\nlayers: {cases: [dilated2, plain]}\n")
    with pytest.raises(PsdeployError, match="'layers.cases': value error, must start with plain"):
        load_report_config(path, None)
    spec = LayerSpec(16, 9, 1, 1)
    cases = [c.case for c in layer_cases(spec, ["fused"], reference_cases=("plain",))]
    assert [(c.role, c.lowering) for c in cases] == [(Role.PLAIN, None), (Role.DEPLOYED, "fused")]


def test_statistics() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.median_ms == 3.0 and stats.min_ms == 1.0 and stats.noisy
    assert ratio_spread([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])[0] == 2.0


@pytest.fixture(scope="module")
def precision_report(tmp_path_factory):
    pytest.importorskip("nncf")
    config = ReportConfig(name="precisions", threads=1, backends=["torch", "onnxruntime", "openvino"],
                          precisions=["f32", "bf16", "int8"], warmup=2, max_warmup=4, iters=30,
                          layer_shapes=[(16, 9)], layer_cases=("plain",),
                          network_pairs=[("ps_resnet_digits", "resnet_digits")], network_batches=[2])
    data = run_report(config)
    out = tmp_path_factory.mktemp("precision-report") / "precisions"
    write_report(data, out)
    return data, out


def test_report_times_plain_and_psconv_at_each_precision_a_backend_builds(precision_report) -> None:
    """Each backend at each precision it offers, plain and PSConv in one group at that precision; torch and
    onnxruntime bf16 are left out and said so; int8 cases ran int8 convs and passed the gate (cosine), f32 ones
    fp32 parity."""
    from psdeploy.report.check import check_report

    import openvino as ov

    data, out = precision_report
    bf16_here = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    groups = {(m.backend, m.precision) for m in data.measurements}
    assert groups == {("torch", "f32"), ("onnxruntime", "f32"), ("onnxruntime", "int8"), ("openvino", "f32"),
                      ("openvino", "int8"), *([("openvino", "bf16")] if bf16_here else [])}
    assert data.left_out == ["torch bf16 (not built there)", "torch int8 (not built there)",
                             "onnxruntime bf16 (not built there)", *([] if bf16_here else ["openvino bf16 (not on this CPU)"])]
    for m in data.measurements:
        if m.precision == "f32":
            assert m.parity_rel_err <= ONNXRUNTIME_TOL and m.mean_cosine is None
        else:
            assert m.parity_rel_err is None and m.mean_cosine >= data.config.gate.min_cosine
    int8 = [m for m in data.measurements if m.precision == "int8"]
    for m in int8:
        done, total = map(int, m.int8_convs.split("/"))
        assert done >= 1 and total >= done
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in seeded_model("resnet_digits").modules())
    plain_net = [m for m in int8 if m.table == "network" and m.role == Role.PLAIN.value]
    assert {m.int8_convs for m in plain_net} == {f"{convs}/{convs}"}  # every conv of the plain net, on both
    md = (out / "report.md").read_text()
    assert "### openvino int8: ps_resnet_digits b2" in md and "Not timed: torch bf16" in md and "convs int8" in md
    assert check_report(out) == len(data.measurements)


def test_tvm_int8_is_timed_where_built_and_left_out_with_winograd() -> None:
    """TVM's int8 convs are direct: a Winograd backend's int8 pair is left out naming the option; the direct one
    is timed at int8 where the CPU has VNNI (elsewhere left out as not on this CPU)."""
    pytest.importorskip("tvm")
    from psdeploy.backends import backend_for, parse_target
    from psdeploy.report.config import platforms

    config = ReportConfig(name="tvm-int8", threads=2, backends=["tvm-llvm", "tvm-llvm-wino2"],
                          precisions=["f32", "int8"], tvm_untuned=True)
    built, left_out = platforms(config)
    vnni_here = "int8" in backend_for(parse_target("llvm")).precisions_here()
    assert [(p.name, p.precision) for p in built] == [("tvm-llvm", "f32"), *([("tvm-llvm", "int8")] if vnni_here else []),
                                                      ("tvm-llvm-wino2", "f32")]
    assert left_out == [*([] if vnni_here else ["tvm-llvm int8 (not on this CPU)"]),
                        "tvm-llvm-wino2 int8 (not built with --winograd f2)"]
