"""Every kind of file a user hands psdeploy, damaged: input arrays, ONNX files, recipes, report recipes,
tuning databases and artifact directories. Each gives exit 2 and one line naming the file, never a
traceback, and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.cli import main


def _fails(*args: str, expect: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expect in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    api.export("seeded:ps_resnet_digits", path)
    return path


@pytest.fixture(scope="module")
def ort_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("art") / "digits-ort"
    api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output=out)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("make, expect", [
    (lambda p: p.write_text("1 2 3\n"), "not a readable .npy array"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)), "not a readable .npy array"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a readable .npy array"),
    (lambda p: np.save(p, np.zeros((3, 32, 32), np.float32)), "shape (3, 32, 32)"),
    (lambda p: np.save(p, np.zeros((1, 3, 16, 16), np.float32)), "shape (1, 3, 16, 16)"),
    (lambda p: np.save(p, np.zeros((1, 3, 32, 32), np.complex64)), "dtype complex64"),
    (lambda p: p.write_bytes(b""), "not a readable .npy array"),
], ids=["text", "random-bytes", "pickled-objects", "3d", "wrong-size", "complex", "empty"])
def test_bad_input_arrays(onnx_file, tmp_path, make, expect) -> None:
    path = tmp_path / "x.npy"
    make(path)
    _fails("run", str(onnx_file), "--input", str(path), "--save-output", str(tmp_path / "y.npy"), expect=expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_good_input_array_runs(onnx_file, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float64))
    result = CliRunner().invoke(main, ["run", str(onnx_file), "--input", str(tmp_path / "x.npy"), "--save-output",
                                       str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "y.npy").shape == (1, 10)


@pytest.mark.parametrize("make, expect", [
    (lambda p, good: p.write_bytes(np.random.default_rng(1).bytes(2000)), "not a readable ONNX model"),
    (lambda p, good: p.write_bytes(good.read_bytes()[:5000]), "not a readable ONNX model"),
    (lambda p, good: p.write_bytes(b""), "not a readable ONNX model"),
], ids=["random-bytes", "truncated", "empty"])
@pytest.mark.parametrize("command", ["run", "bench", "profile", "compile"])
def test_bad_onnx_files(onnx_file, tmp_path, make, expect, command) -> None:
    path = tmp_path / "bad.onnx"
    make(path, onnx_file)
    args = {"run": ["run", str(path)], "bench": ["bench", str(path), "--iters", "30"],
            "profile": ["profile", str(path)],
            "compile": ["compile", str(path), "--target", "onnxruntime-cpu", "-o", str(tmp_path / "out")]}[command]
    _fails(*args, expect="" if command == "compile" else expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_onnx_that_onnxruntime_cannot_load(tmp_path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["input"], ["y"], domain="ai.nowhere")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "odd.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.nowhere", 1)]),
         str(path))
    _fails("run", str(path), expect="onnxruntime cannot load it")
    _fails("profile", str(path), expect="onnxruntime cannot load it")


def test_a_file_that_is_neither_onnx_nor_artifact(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _fails("run", str(path), expect="expected an .onnx file or a compiled artifact directory")


@pytest.mark.parametrize("body, expect", [
    ("model: [unclosed\n", "not valid YAML"),
    ("\x00\x01\x02binary", "not valid YAML"),
    ("just a string\n", "expected a mapping"),
    ("model: {checkpoint: x}\nbackend: {target: llvm}\nbench: {iters: 5}\n", "unknown key 'bench'"),
    ("model: {checkpoint: x, input_shape: [1, 3, 0, 32]}\nbackend: {target: llvm}\n", "'model.input_shape.2'"),
], ids=["yaml-syntax", "binary", "scalar", "bench-section", "zero-dim"])
def test_bad_compile_recipes(tmp_path, body, expect) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(body)
    _fails("compile", "--recipe", str(path), "-o", str(tmp_path / "out"), expect=expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


@pytest.mark.parametrize("body, expect", [
    ("backends: onnxruntime\n", "'backends'"),
    ("layers: {shapes: [[64]]}\n", "'layers.shapes.0'"),
    ("timing: {iters: 10}\n", "'timing.iters'"),
    ("networks: {pairs: [[ps_resnet50, resnet50, resnet101]]}\n", "'networks.pairs.0'"),
    ("layers: {strides: [3]}\n", "'layers.strides.0'"),
], ids=["backends-scalar", "shape-pair", "few-iters", "pair-of-three", "stride"])
def test_bad_report_recipes(tmp_path, body, expect) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(body)
    _fails("report", "--recipe", str(path), "-o", str(tmp_path / "out"), expect=expect)
    assert not (tmp_path / "out").exists()


def test_tuning_db_that_is_a_file(tmp_path) -> None:
    pytest.importorskip("tvm")
    (tmp_path / "db").write_text("not a directory")
    _fails("compile", "seeded:ps_resnet_digits", "--target", "llvm", "--tuning-db", str(tmp_path / "db"),
           "--tune-trials", "2", "-o", str(tmp_path / "out"), expect="'--tuning-db'")
    assert not (tmp_path / "out").exists()


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _points_outside(directory: Path, module: str) -> None:
    """The manifest names a module elsewhere, and a working module lies there."""
    target = (directory / module).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(directory / "model.onnx", target)
    (directory / "manifest.json").write_text(json.dumps({**_manifest(directory), "module_file": module}))


def _link_outside(directory: Path) -> None:
    """The module is a symbolic link to a working module outside the directory."""
    outside = directory.parent / "elsewhere.onnx"
    shutil.copyfile(directory / "model.onnx", outside)
    (directory / "model.onnx").unlink()
    (directory / "model.onnx").symlink_to(outside)


@pytest.mark.parametrize("damage, expect", [
    (lambda d: (d / "manifest.json").unlink(), "not a psdeploy artifact"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "unreadable manifest"),
    (lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe\x00garbage"), "unreadable manifest"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({**_manifest(d), "input_shape": "1,3,32,32"})),
     "'input_shape'"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({**_manifest(d), "backend": "tensorrt"})),
     "unknown backend 'tensorrt'"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({**_manifest(d), "format": 7})), "'format'"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({k: v for k, v in _manifest(d).items() if k != "arch"})),
     "'arch' is required"),
    (lambda d: (d / "model.onnx").unlink(), "model.onnx is missing"),
    (lambda d: (d / "model.onnx").write_bytes(b"\x00" * 64), "onnxruntime cannot load it"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({**_manifest(d), "input_shape": [-1, 3, 32, 32]})),
     "'input_shape.0'"),
    # opening a module runs it (a TVM module is a shared library): only the backend's file inside the directory
    (lambda d: _points_outside(d, "../evil.onnx"), "module_file '../evil.onnx'; expected the onnxruntime module"),
    (lambda d: _points_outside(d, str((d.parent / "evil.onnx").resolve())), "module_file '/"),
    (lambda d: _points_outside(d, "sub/model.onnx"), "module_file 'sub/model.onnx'"),
    (lambda d: _link_outside(d), "model.onnx: a symbolic link; expected the onnxruntime module itself"),
], ids=["no-manifest", "manifest-not-json", "manifest-binary", "shape-type", "backend", "format", "no-arch",
        "no-module", "module-garbage", "negative-dim", "module-parent", "module-absolute", "module-subdir",
        "module-symlink"])
@pytest.mark.parametrize("command", ["run", "verify", "bench", "profile"])
def test_damaged_artifact_directories(ort_artifact, tmp_path, damage, expect, command) -> None:
    art = _copy(ort_artifact, tmp_path)
    damage(art)
    args = {"run": ["run", str(art)], "verify": ["verify", str(art), "--against", "seeded:ps_resnet_digits"],
            "bench": ["bench", str(art), "--iters", "30"], "profile": ["profile", str(art), "--runs", "1"]}[command]
    _fails(*args, expect=expect)


@pytest.mark.parametrize("args, expect", [
    (["compile", "seeded:ps_resnet_digits", "--target", "llvm", "--winograd", "f8", "-o", "x"], "'--winograd'"),
    (["bench", "--iters", "many", "m.onnx"], "'--iters'"),
    (["export"], "Missing argument"),
], ids=["choice", "int", "missing"])
def test_bad_flags_are_one_line_too(args, expect) -> None:
    _fails(*args, expect=expect)


def _with_record(value: str | None, old_keys: bool = False):
    """Write ``good`` to ``path`` with its export record replaced by ``value`` (None: removed)."""
    import onnx

    def make(path: Path, good: Path) -> None:
        model = onnx.load(str(good))
        kept = [p for p in model.metadata_props if p.key != "psdeploy.export"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        for key, text in ([("psdeploy.export", value)] if value is not None else []) + \
                ([("psdeploy.arch", "ps_resnet_digits")] if old_keys else []):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, text
        onnx.save(model, str(path))

    return make


def _record_of(good: Path) -> dict:
    import onnx

    model = onnx.load(str(good))
    return json.loads(next(p.value for p in model.metadata_props if p.key == "psdeploy.export"))


@pytest.mark.parametrize("change, expect", [
    (lambda r: "{not json", "metadata 'psdeploy.export': not JSON"),
    (lambda r: json.dumps({**r, "input_shape": [1, 3, 32]}), "'input_shape"),
    (lambda r: json.dumps({**r, "dynamic_batch": "true"}), "'dynamic_batch': input should be a valid boolean"),
    (lambda r: json.dumps({k: v for k, v in r.items() if k != "arch"}), "'arch' is required"),
    (lambda r: json.dumps({**r, "input_shape": [100000, 3, 4096, 4096]}), "input shape 100000,3,4096,4096"),
    (lambda r: None, "no 'psdeploy.export' metadata"),
], ids=["not-json", "short-shape", "string-bool", "no-arch", "huge-shape", "no-record"])
def test_damaged_export_records(onnx_file, tmp_path, change, expect) -> None:
    path = tmp_path / "bad.onnx"
    _with_record(change(_record_of(onnx_file)))(path, onnx_file)
    _fails("compile", str(path), "--target", "onnxruntime-cpu", "-o", str(tmp_path / "out"), expect=expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_an_earlier_psdeploys_export_is_told_to_export_again(onnx_file, tmp_path) -> None:
    path = tmp_path / "old.onnx"
    _with_record(None, old_keys=True)(path, onnx_file)
    _fails("compile", str(path), "--target", "onnxruntime-cpu", "-o", str(tmp_path / "out"),
           expect="exported by an earlier psdeploy")
