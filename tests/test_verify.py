"""The verification API itself: what every parity figure in psdeploy rests on, checked on known numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psdeploy.errors import VerificationError
from psdeploy.verify.accuracy import AccuracyReport, held_out_top1
from psdeploy.parity.compare import CaseParity, OutputParity, ParityReport, compare, make_input, output_parity
from psdeploy.parity.runners import onnxruntime_session, torch_runner


def test_output_parity_on_known_numbers() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.0]], np.float32)
    cand = np.array([[1.0, -3.5], [2.0, 0.25]], np.float32)
    p = output_parity("y", ref, cand)
    assert (p.name, p.max_abs_err, p.max_abs_ref, p.rel_err) == ("y", 0.5, 4.0, 0.125)
    r64, c64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()  # computed in float64
    expected_cos = float(r64 @ c64 / (np.linalg.norm(r64) * np.linalg.norm(c64)))
    assert p.cosine == pytest.approx(expected_cos, rel=1e-12) and p.cosine < 1


def test_output_parity_edge_cases() -> None:
    zeros = np.zeros((2, 3), np.float32)
    assert output_parity("y", zeros, zeros).rel_err == 0.0 and output_parity("y", zeros, zeros).cosine == 1.0
    off = output_parity("y", zeros, zeros + 1)
    assert off.rel_err == float("inf") and off.cosine == 0.0
    mismatch = output_parity("y", np.ones((2, 3), np.float32), np.ones((3, 2, 1), np.float32))
    assert mismatch.rel_err == mismatch.max_abs_err == float("inf") and mismatch.max_abs_ref == 1.0
    assert mismatch.cosine == 0.0 and not mismatch.passed(1.0)


@pytest.mark.parametrize("rel, tolerance, ok", [(1e-4, 1e-4, True), (1.0001e-4, 1e-4, False), (0.0, 0.0, True),
                                                (float("nan"), 1.0, False), (float("inf"), 1e9, False)])
def test_passed_is_at_most_the_tolerance(rel, tolerance, ok) -> None:
    assert OutputParity("y", 0.0, 1.0, rel, 1.0).passed(tolerance) is ok


def _report(*rels: float, tolerance: float = 1e-4) -> ParityReport:
    report = ParityReport("cand", "ref", tolerance)
    for i, rel in enumerate(rels):
        report.cases.append(CaseParity((1, 3, 8, 8 + i), i, [OutputParity(f"o{i}", rel, 1.0, rel, 1 - rel)]))
    return report


def test_report_summary() -> None:
    assert not _report().passed  # no case: nothing was shown
    report = _report(1e-6, 3e-5, 2e-6)
    assert report.passed and report.worst.name == "o1"
    d = report.to_dict()
    assert (d["worst_rel_err"], d["worst_cosine"], d["passed"], len(d["cases"])) == (3e-5, 1 - 3e-5, True, 3)
    assert d["cases"][1] == {"input": "1x3x8x9", "seed": 1, "name": "o1", "max_abs_err": 3e-5, "max_abs_ref": 1.0,
                             "rel_err": 3e-5, "cosine": 1 - 3e-5, "ok": True}
    report.raise_if_failed()
    failing = _report(1e-6, 2e-4)
    assert not failing.passed and not failing.rows()[1]["ok"] and failing.rows()[0]["ok"]
    with pytest.raises(VerificationError, match=r"cand vs ref: output o1 rel err 0\.0002 > tolerance 0\.0001"):
        failing.raise_if_failed()


def test_make_input() -> None:
    even, odd = make_input((2, 3, 4, 5), 0), make_input((2, 3, 4, 5), 1)
    assert even.dtype == np.float32 and even.shape == (2, 3, 4, 5)
    assert np.array_equal(even, np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32))
    raw = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert np.array_equal(odd, np.clip(raw * 1.5 + 0.2, -2.2, 2.7).astype(np.float32))
    assert not np.array_equal(make_input((2, 3), 2), make_input((2, 3), 4))


def test_compare_runs_every_shape_and_seed() -> None:
    seen = []

    def reference(x):
        seen.append(x.shape)
        return [x * 2, x.sum(axis=1)]

    report = compare(reference, lambda x: [x * 2, x.sum(axis=1) + 1e-3], [(1, 2, 3, 3), (2, 2, 5, 5)], ["a", "b"],
                     candidate_name="c", reference_name="r", tolerance=1e-5, seeds=(0, 3, 4))
    assert seen == [(1, 2, 3, 3)] * 3 + [(2, 2, 5, 5)] * 3
    assert [(c.input_shape, c.seed) for c in report.cases][:4] == [((1, 2, 3, 3), 0), ((1, 2, 3, 3), 3),
                                                                  ((1, 2, 3, 3), 4), ((2, 2, 5, 5), 0)]
    assert all(c.outputs[0].rel_err == 0 and c.outputs[1].rel_err > 0 for c in report.cases)
    assert not report.passed and report.worst.name == "b" and report.candidate == "c" and report.reference == "r"
    with pytest.raises(ValueError):  # a missing output is an error, never a shorter comparison
        compare(reference, lambda x: [x * 2], [(1, 2, 3, 3)], ["a", "b"], candidate_name="c", reference_name="r")


def test_torch_runner() -> None:
    conv = torch.nn.Conv2d(2, 2, 1).train()
    run = torch_runner(conv)
    assert not conv.training
    x = np.ones((1, 2, 3, 3), np.float32)
    (y,) = run(x)
    with torch.no_grad():
        assert isinstance(y, np.ndarray) and np.array_equal(y, conv(torch.from_numpy(x)).numpy())

    class Two(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 3

    a, b = torch_runner(Two())(x)
    assert np.array_equal(a, x + 1) and np.array_equal(b, x * 3)


def test_onnxruntime_session_options(tmp_path) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    session = onnxruntime_session(path, threads=1, optimize=False, profile_prefix=str(tmp_path / "p"))
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.enable_profiling and options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = onnxruntime_session(path).get_session_options()
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert not default.enable_profiling
    out = session.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
    assert out.tolist() == [[0, 2, 0, 4]]


def test_accuracy_report_agreement() -> None:
    assert AccuracyReport(0.9, 0.9, 1.0, 10).agree
    assert not AccuracyReport(0.9, 0.9, 0.8, 10).agree  # same top-1, different predictions
    assert not AccuracyReport(0.9, 0.8, 1.0, 10).agree


def test_held_out_top1_batches_and_pads() -> None:
    pytest.importorskip("sklearn")
    calls = []

    def reference(x):
        calls.append(len(x))
        return [x.reshape(len(x), -1)[:, :10] * 1.0]

    def flipped(x):
        return [-reference(x)[0]]

    same = held_out_top1(reference, reference, batch=7)
    assert same.samples == 450 and same.agree and set(calls) == {7}  # the tail is padded to a full batch
    other = held_out_top1(reference, flipped, batch=1)
    assert other.prediction_agreement < 1 and not other.agree
