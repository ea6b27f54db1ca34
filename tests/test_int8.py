"""int8 artifacts: quantized by each runtime's own tool, int8 where it counts, gated against fp32, bad data refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.backends import Manifest, open_runner
from psdeploy.backends.tvm.host import host_cpu_flags
from psdeploy.calibration import MIN_SAMPLES, read_calibration
from psdeploy.cli import main
from psdeploy.errors import PsdeployError, VerificationError
from psdeploy.load import load_model
from psdeploy.parity.runners import torch_runner
from psdeploy.verify.accuracy import held_out_top1
from tests.conftest import DEMO_CHECKPOINT

DEMO_SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def ort_int8(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "digits-ort-int8"
    api.compile(str(DEMO_CHECKPOINT), target="onnxruntime-cpu", output=out, precision="int8", calibration="digits")
    return out


@pytest.fixture(scope="module")
def ov_int8(tmp_path_factory) -> Path:
    pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("int8") / "digits-ov-int8"
    api.compile(str(DEMO_CHECKPOINT), target="openvino-cpu", output=out, precision="int8", calibration="digits")
    return out


def _samples(n: int, shape: tuple[int, ...] = DEMO_SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_onnxruntime_runs_every_conv_as_an_integer_kernel(ort_int8, tmp_path) -> None:
    """The test's own look at what onnxruntime runs: the graph it optimizes the artifact into."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(ort_int8 / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    quantization = Manifest.read(ort_int8).quantization
    assert ops["QLinearConv"] == quantization.convs_int8 == quantization.convs == 34
    assert ops["Conv"] == ops["FusedConv"] == ops["NchwcConv"] == 0
    assert ops["Gather"] == 12  # PSConv's folded channel permutation, moving int8 data


def test_openvino_runs_every_conv_on_int8_data(ov_int8) -> None:
    """The test's own look at the compiled model: each conv's runtime precision."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(ov_int8 / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    convs = [n.get_rt_info()["runtimePrecision"].astype(str) for n in compiled.get_runtime_model().get_ops()
             if n.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert len(convs) == 34 and set(convs) <= {"u8", "i8"}
    assert Manifest.read(ov_int8).quantization.convs_int8 == 34


@pytest.mark.parametrize("artifact", ["ort_int8", "ov_int8"])
def test_top1_within_half_a_point_of_fp32(artifact, request) -> None:
    directory = request.getfixturevalue(artifact)
    runner = open_runner(directory)
    report = held_out_top1(torch_runner(load_model(DEMO_CHECKPOINT).model), runner.run, runner.batch)
    assert report.reference_top1 - report.candidate_top1 <= 0.005 and report.prediction_agreement >= 0.99
    manifest = Manifest.read(directory)
    assert manifest.precision == "int8" and manifest.parity is None
    assert manifest.accuracy["artifact_top1"] == report.candidate_top1
    assert manifest.calibration.source == "digits" and manifest.calibration.held_out == 450
    gate = manifest.gate
    assert gate.samples == 450 and gate.mean_cosine >= gate.gate.min_cosine and gate.top1_agreement >= 0.99


def test_a_failed_gate_is_an_error_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "never"
    with pytest.raises(VerificationError, match=r"mean cosine 0\.\d+; expected >= 1 \(--min-cosine lowers the gate\)"):
        api.compile(str(DEMO_CHECKPOINT), target="onnxruntime-cpu", output=out, precision="int8",
                    calibration="digits", min_cosine=1.0)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_int8_artifacts_are_not_checked_by_fp32_parity(ort_int8) -> None:
    with pytest.raises(PsdeployError, match="an int8 artifact; fp32 parity does not apply"):
        api.verify(ort_int8, DEMO_CHECKPOINT)


def test_calibration_from_a_folder_of_samples_and_batches(tmp_path) -> None:
    x = _samples(30)
    np.save(tmp_path / "a.npy", x[:20])
    for i in range(20, 30):
        np.save(tmp_path / f"s{i}.npy", x[i])
    data = read_calibration(tmp_path)
    assert (len(data.calibrate), len(data.held_out)) == (22, 8)
    assert data.sha256 == read_calibration(x).sha256  # the same samples, in the same order
    assert np.isin(data.held_out[:, 0, 0, 0], x[:, 0, 0, 0]).all()
    assert not np.isin(data.held_out[:, 0, 0, 0], data.calibrate[:, 0, 0, 0]).any()


def test_calibrating_on_a_users_npy_array(tmp_path) -> None:
    path = tmp_path / "calib.npy"
    np.save(path, _samples(40))
    out = tmp_path / "ort"
    result = api.compile(str(DEMO_CHECKPOINT), target="onnxruntime-cpu", output=out, precision="int8",
                         calibration=path, min_agreement=0.5)
    manifest = result.manifest
    assert manifest.calibration.source == str(path) and manifest.calibration.calibrated_on == 30
    assert manifest.gate.samples == 10 and manifest.gate.gate.min_agreement == 0.5


@pytest.mark.parametrize(("data", "message"), [
    (_samples(MIN_SAMPLES - 1), f"{MIN_SAMPLES - 1} samples; expected at least {MIN_SAMPLES}"),
    (_samples(30)[:, 0], r"shape \(30, 32, 32\); expected N,C,H,W"),
    (np.where(np.arange(30)[:, None, None, None] == 3, np.nan, _samples(30)), "1 of 30 samples hold NaN"),
    (np.array(["a"] * 30), "dtype <U1; expected a numeric array"),
])
def test_bad_calibration_arrays_are_refused(data, message, tmp_path) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, data)
    with pytest.raises(PsdeployError, match=f"--calibration {path}: {message}"):
        read_calibration(path)


def test_bad_calibration_sources_are_refused(tmp_path) -> None:
    with pytest.raises(PsdeployError, match="no such .npy file or folder"):
        read_calibration(tmp_path / "missing.npy")
    with pytest.raises(PsdeployError, match="no .npy files or images in the folder"):
        read_calibration(tmp_path)
    np.save(tmp_path / "a.npy", _samples(20))
    np.save(tmp_path / "b.npy", _samples(5, (3, 16, 16)))
    with pytest.raises(PsdeployError, match=r"samples of different shapes \(3,16,16, 3,32,32\)"):
        read_calibration(tmp_path)


def test_samples_of_another_shape_than_the_model_are_refused_before_building(tmp_path) -> None:
    path = tmp_path / "calib.npy"
    np.save(path, _samples(30, (3, 16, 16)))
    result = CliRunner().invoke(main, ["compile", str(DEMO_CHECKPOINT), "--target", "onnxruntime-cpu", "-o",
                                       str(tmp_path / "out"), "--precision", "int8", "--calibration", str(path)])
    assert result.exit_code == 2
    assert f"--calibration {path}: samples of shape 3,16,16; expected the model's input 3,32,32" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"target": "onnxruntime-cpu", "precision": "int8"}, "--precision int8: needs --calibration DATA"),
    ({"target": "onnxruntime-cpu", "calibration": "digits"}, "--calibration digits: calibrates int8 builds"),
    ({"target": "onnxruntime-cpu", "precision": "bf16"}, "--precision bf16: not a precision onnxruntime-cpu builds"),
    ({"target": "onnxruntime-cpu", "precision": "int8", "calibration": "digits", "min_cosine": 1.5},
     "--min-cosine 1.5: expected a number >= 0 and <= 1"),
])
def test_int8_options_are_checked(options, message, tmp_path) -> None:
    with pytest.raises(PsdeployError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.compile(str(DEMO_CHECKPOINT), output=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not {"avx512bf16", "amxbf16"} & (host_cpu_flags() or frozenset()),
                    reason="OpenVINO runs bf16 only on CPUs with AVX512_BF16 or AMX")
def test_bf16_is_gated_beside_fp32_not_held_to_fp32_parity(tmp_path) -> None:
    """bf16 cannot meet fp32's 1e-4 parity (its mantissa has 8 bits); it passes the accuracy gate on synthetic
    inputs instead, and the demo's top-1; a gate it cannot pass is an error that writes nothing."""
    out = tmp_path / "bf16"
    manifest = api.compile(str(DEMO_CHECKPOINT), target="openvino-cpu", output=out, precision="bf16").manifest
    assert manifest.precision == "bf16" and manifest.parity is None and manifest.calibration is None
    gate = Manifest.read(out).gate
    assert gate.data.startswith("synthetic inputs") and gate.samples == 12 and 0.99 <= gate.mean_cosine < 1.0
    assert manifest.accuracy["checkpoint_top1"] - manifest.accuracy["artifact_top1"] <= 0.005
    with pytest.raises(VerificationError, match=r"\(bf16\) vs fp32 on 12 held-out samples of synthetic inputs"):
        api.compile(str(DEMO_CHECKPOINT), target="openvino-cpu", output=tmp_path / "never", precision="bf16",
                    min_cosine=1.0)
    assert not (tmp_path / "never").exists()
