"""Every "nothing half-written" promise, tested where it can break: a failure injected *after* the
temporary file or staged directory exists must leave the destination's directory as it was (hidden
files included), and with --force the previous artifact must survive intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psdeploy import api
from psdeploy.backends.onnxruntime import OnnxruntimeBackend
from psdeploy.errors import VerificationError


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, hidden ones included, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def test_export_fails_after_the_temporary_file_exists(tmp_path, monkeypatch) -> None:
    import psdeploy.export as export_module
    real_runner = export_module.onnxruntime_runner
    seen: list[bool] = []

    def off_by_a_little(path, threads=None):
        seen.append(Path(path).is_file() and Path(path).parent == tmp_path)
        run = real_runner(path, threads)
        return lambda x: [y + 1e-2 for y in run(x)]

    monkeypatch.setattr(export_module, "onnxruntime_runner", off_by_a_little)
    (tmp_path / "keep.txt").write_text("a file that was there before")
    before = _tree(tmp_path)
    with pytest.raises(VerificationError, match=r"onnx\[grouped\]"):
        api.export("seeded:ps_resnet_digits", tmp_path / "net.onnx")
    assert seen and all(seen)  # the ONNX parity check ran on the written temporary file
    assert _tree(tmp_path) == before


def _break_verification(monkeypatch) -> None:
    real_open = OnnxruntimeBackend.open

    def open_with_wrong_outputs(self, module, target, threads=None, precision="f32"):
        assert module.is_file()  # the artifact's module exists in the staged directory
        run, description = real_open(self, module, target, threads, precision)
        return (lambda x: [np.asarray(y) * 1.001 for y in run(x)]), description

    monkeypatch.setattr(OnnxruntimeBackend, "open", open_with_wrong_outputs)


def test_compile_fails_at_artifact_verification(tmp_path, monkeypatch) -> None:
    _break_verification(monkeypatch)
    before = _tree(tmp_path)
    with pytest.raises(VerificationError, match="parity check failed"):
        api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output=tmp_path / "art")
    assert _tree(tmp_path) == before


def test_force_and_a_failure_keep_the_previous_artifact(tmp_path, monkeypatch) -> None:
    api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output=tmp_path / "art")
    before = _tree(tmp_path)
    _break_verification(monkeypatch)
    with pytest.raises(VerificationError):
        api.compile("seeded:ps_resnet_digits@1", target="onnxruntime-cpu", output=tmp_path / "art", force=True)
    assert _tree(tmp_path) == before


def test_ctrl_c_while_building_keeps_the_previous_artifact(tmp_path, monkeypatch) -> None:
    """Ctrl-C in the middle of a build (the backend has written part of its module) unwinds cleanly."""
    api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output=tmp_path / "art")
    before = _tree(tmp_path)

    def interrupted_build(self, onnx_path, input_shape, target, options, out_dir):
        (out_dir / self.module_file).write_bytes(b"half a module")
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxruntimeBackend, "build", interrupted_build)
    with pytest.raises(KeyboardInterrupt):
        api.compile("seeded:ps_resnet_digits@1", target="onnxruntime-cpu", output=tmp_path / "art", force=True)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("directory", [False, True])
def test_atomic_output_interrupted_half_way(tmp_path, directory) -> None:
    """The one helper every writer uses (export, compile, report, run --save-output, bench --json)."""
    from psdeploy.fileio import atomic_output

    target = tmp_path / "out"
    (target.mkdir() if directory else target.write_text("old"))
    if directory:
        (target / "old.txt").write_text("old")
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt), atomic_output(target, directory=directory, force=True) as tmp:
        (tmp / "half.bin" if directory else tmp).write_bytes(b"half")
        raise KeyboardInterrupt
    assert _tree(tmp_path) == before
