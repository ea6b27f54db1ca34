"""The parsed target travels whole from the command line to the lowering search's timing code and to
the build: ``--lowering auto`` times its candidates for the CPU, core count or CUDA arch asked for."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import psdeploy.compile
import psdeploy.search
from psdeploy.search.prepare import Prepared
from psdeploy.cli import main
from psdeploy.errors import PsdeployError

pytest.importorskip("tvm")


@pytest.fixture()
def recorded(monkeypatch) -> list[tuple[str, object]]:
    """Every target the search prepares a candidate for, then the one the artifact is built for."""
    from psdeploy.backends.tvm import TvmBackend

    seen: list[tuple[str, object]] = []

    def fake_prepare(module, reference, shape, target, options, threads, name, directory, **kw) -> Prepared:
        seen.append((f"search:{name}", target))
        return Prepared(lambda: (lambda: None), None)

    def fake_build(self, onnx_path, input_shape, target, options, out_dir):
        seen.append(("build", target))
        raise PsdeployError("stopped before building: the target was recorded")

    monkeypatch.setattr(psdeploy.search, "prepare_on_target", fake_prepare)
    monkeypatch.setattr(TvmBackend, "build", fake_build)
    return seen


def _compile(tmp_path, *flags: str):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--lowering", "auto", "-o", str(out),
                                       *flags])
    assert result.exit_code == 2 and "target was recorded" in result.output, result.output
    assert not out.exists()


def test_auto_times_candidates_for_the_requested_cpu(tmp_path, recorded) -> None:
    _compile(tmp_path, "--target", "llvm", "--mcpu", "nehalem", "--num-cores", "16")  # a CPU any x86-64 host runs
    names = [name for name, _ in recorded]
    assert names[0] == "search:plain" and {"search:grouped", "search:polyphase", "search:fused"} <= set(names)
    assert names[-1] == "build"
    for _, target in recorded:
        assert target.tvm_target["mcpu"] == "nehalem" and target.tvm_target["num-cores"] == 16


def test_auto_times_candidates_for_the_requested_cuda_arch(tmp_path, recorded, monkeypatch) -> None:
    monkeypatch.setattr(psdeploy.compile, "cannot_run_here", lambda target: None)
    _compile(tmp_path, "--target", "cuda", "--cuda-arch", "sm_80", "--mcpu", "haswell")
    assert len(recorded) > 3
    for _, target in recorded:
        assert target.tvm_target["kind"] == "cuda" and target.tvm_target["arch"] == "sm_80"
        assert target.tvm_target["host"]["mcpu"] == "haswell"


def test_auto_on_cuda_without_a_gpu_says_so(tmp_path) -> None:
    from psdeploy.backends.tvm.host import cuda_available

    if cuda_available():
        pytest.skip("a GPU is visible")
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--lowering", "auto", "--target", "cuda",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no CUDA GPU is visible here" in result.output


def test_export_auto_times_candidates_on_the_runtime_the_file_is_for(tmp_path, monkeypatch) -> None:
    """onnxruntime and OpenVINO want different forms (sliced keeps OpenVINO's layouts blocked)."""
    pytest.importorskip("openvino")
    seen: list[str] = []

    def fake_prepare(module, reference, shape, target, options, threads, name, directory, **kw) -> Prepared:
        seen.append(target.name)
        return Prepared(lambda: (lambda: None), None)

    monkeypatch.setattr(psdeploy.search, "prepare_on_target", fake_prepare)
    result = CliRunner().invoke(main, ["export", "seeded:ps_resnet_digits", "--lowering", "auto", "--on",
                                       "openvino-cpu", "-o", str(tmp_path / "net.onnx")])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {"openvino-cpu"} and (tmp_path / "net.onnx").is_file()


def test_no_lowering_named_gives_the_runtime_its_fastest_form(tmp_path) -> None:
    """Without --lowering, export --on and compile --target give each runtime its own default form."""
    pytest.importorskip("openvino")
    import onnx

    from psdeploy import api
    from psdeploy.backends import Manifest
    from psdeploy.export import ExportRecord

    def stamped(path) -> str:
        return ExportRecord.read(onnx.load(str(path), load_external_data=False), str(path)).lowering

    api.export("seeded:ps_resnet_digits", tmp_path / "ort.onnx")
    api.export("seeded:ps_resnet_digits", tmp_path / "ov.onnx", on="openvino-cpu")
    assert stamped(tmp_path / "ort.onnx") == "grouped" and stamped(tmp_path / "ov.onnx") == "sliced"
    api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=tmp_path / "ov")
    assert Manifest.read(tmp_path / "ov").lowering == "sliced"
    with pytest.raises(PsdeployError, match="--on llvm: for a TVM target"):
        api.export("seeded:ps_resnet_digits", tmp_path / "x.onnx", on="llvm")
