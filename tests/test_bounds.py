"""Every value is bounded before use: YAML aliases refused, input shapes checked against memory before
anything is allocated, every numeric flag and recipe key in its range (one table, ``psdeploy.bounds``)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from psdeploy import api, bounds
from psdeploy.errors import PsdeployError
from tests.conftest import DEMO_CHECKPOINT, REPO
from tests.test_bad_files import _fails

HUGE_SHAPE = "1,3,200000,200000"  # 4.8e11 bytes of input alone


def _bomb(levels: int = 8) -> str:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join([*rows, f"model: *a{levels}", ""])


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "d.onnx"
    api.export("seeded:ps_resnet_digits", path, dynamic_batch=True)
    return path


# --- YAML: aliases refused -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["compile", "report"])
def test_alias_bomb_is_refused_and_nothing_written(tmp_path, command) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    _fails(command, "--recipe", str(path), "-o", str(tmp_path / "out"),
           expect=f"{path}: YAML aliases (*name) are not accepted (line 2)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]


def test_a_single_alias_is_refused_too(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: &m {checkpoint: x}\nbackend: {target: llvm}\nother: *m\n")
    with pytest.raises(PsdeployError, match="YAML aliases"):
        api.compile(recipe=path)


def test_shipped_recipes_need_no_alias() -> None:
    from psdeploy.report import load_report_config

    for path in sorted((REPO / "recipes" / "reports").glob("*.yaml")):
        assert load_report_config(path, None).backends


# --- memory budget --------------------------------------------------------------------------------------

def test_huge_input_shape_refused_before_allocating(tmp_path) -> None:
    out = tmp_path / "x.onnx"
    line = _fails("export", str(DEMO_CHECKPOINT), "--input-shape", HUGE_SHAPE, "-o", str(out),
                  expect=f"--input-shape {HUGE_SHAPE}: an input of {HUGE_SHAPE} needs ~")
    assert "GiB available)" in line
    _fails("compile", "seeded:ps_resnet_digits", "--target", "onnxruntime-cpu", "--input-shape", HUGE_SHAPE,
           "-o", str(tmp_path / "out"), expect=f"--input-shape {HUGE_SHAPE}: an input of")
    with pytest.raises(PsdeployError, match="--input-shape 1,3,200000,200000: an input of"):
        api.export("seeded:ps_resnet_digits", out, input_shape=(1, 3, 200000, 200000))
    assert list(tmp_path.iterdir()) == []


def test_recipe_input_shape_refused(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {checkpoint: 'seeded:ps_resnet_digits', input_shape: [1, 3, 200000, 200000]}\n"
                    "backend: {target: onnxruntime-cpu}\n")
    _fails("compile", "--recipe", str(path), "-o", str(tmp_path / "out"),
           expect=f"{path}: 'model.input_shape' {HUGE_SHAPE}: an input of")
    assert not (tmp_path / "out").exists()


def test_report_layer_shape_refused(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("layers: {shapes: [[64, 1000000]]}\n")
    _fails("report", "--recipe", str(path), "-o", str(tmp_path / "out"),
           expect=f"{path}: 'layers.shapes' [64, 1000000]: an input of 1,64,1000000,1000000 needs ~")


def test_huge_batches_refused(dynamic_onnx) -> None:
    _fails("bench", str(dynamic_onnx), "--batch", "1,100000000", "--iters", "30",
           expect="--batch 100000000: an input of 100000000,3,32,32 needs ~")
    _fails("profile", str(dynamic_onnx), "--batch", "100000000", expect="--batch 100000000: an input of")


def test_the_budget_is_the_memory_available(monkeypatch) -> None:
    shape = (1, 3, 32, 32)
    needed = 3 * 32 * 32 * bounds.BYTES_PER_ELEMENT * bounds.ACTIVATION_FACTOR
    monkeypatch.setattr(bounds, "available_bytes", lambda: needed)
    bounds.check_memory("here", shape)
    monkeypatch.setattr(bounds, "available_bytes", lambda: needed - 1)
    with pytest.raises(PsdeployError, match=r"^here: an input of 1,3,32,32 needs ~0\.0 GiB .*has 0\.0 GiB available"):
        bounds.check_memory("here", shape)


def test_available_memory_is_read() -> None:
    assert 2**20 < bounds.available_bytes() < 2**60


# --- numeric ranges: the CLI (click ranges) ---------------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["bench", "m.onnx", "--threads", "-1"], "Invalid value for '--threads': -1 is not in the range 1<=x<=4096"),
    (["bench", "m.onnx", "--threads", "0"], "'--threads'"),
    (["bench", "m.onnx", "--iters", "29"], "29 is not in the range x>=30"),
    (["bench", "m.onnx", "--warmup", "-1"], "'--warmup'"),
    (["run", "--threads", "5000", "."], "'--threads'"),
    (["profile", "--runs", "0", "."], "'--runs'"),
    (["profile", "--batch", "0", "."], "'--batch'"),
    (["profile", "--top", "0", "."], "'--top'"),
    (["profile", "--threads", "-2", "."], "'--threads'"),
    (["export", "c.pth", "-o", "x.onnx", "--opset", "12"], "'--opset'"),
    (["export", "c.pth", "-o", "x.onnx", "--opset", "99"], "99 is not in the range 13<=x<=28"),
    (["export", "c.pth", "-o", "x.onnx", "--tolerance", "-1e-3"], "'--tolerance'"),
    (["compile", "c.pth", "--target", "llvm", "-o", "x", "--tune-trials", "-1"], "'--tune-trials'"),
    (["compile", "c.pth", "--target", "llvm", "-o", "x", "--num-cores", "0"], "'--num-cores'"),
    (["compile", "c.pth", "--target", "llvm", "-o", "x", "--tolerance", "2"], "'--tolerance'"),
    (["compile", "c.pth", "--target", "llvm", "-o", "x", "--tune-time", "-5m"], "'--tune-time'"),
    (["verify", ".", "--against", "seeded:ps_resnet_digits", "--tolerance", "nan"], "--tolerance nan: expected a number >= 0 and <= 1"),
    (["report", "--quick", "-o", "x", "--threads", "0"], "'--threads'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_numeric_flags_out_of_range(args, expect) -> None:
    _fails(*args, expect=expect)


@pytest.mark.parametrize("batch", ["0", "-1", "1,0", "x", ""])
def test_bench_batch_list_out_of_range(dynamic_onnx, batch) -> None:
    _fails("bench", str(dynamic_onnx), "--batch", batch, "--iters", "30", expect="--batch")


# --- numeric ranges: the API refuses the same ------------------------------------------------------------

@pytest.mark.parametrize("call, expect", [
    (lambda m: api.bench([m], [1], threads=-1), "--threads -1: expected an integer >= 1 and <= 4096"),
    (lambda m: api.bench([m], [1], iters=29), "--iters 29: expected an integer >= 30"),
    (lambda m: api.bench([m], [1], warmup=-1), "--warmup -1: expected an integer >= 0"),
    (lambda m: api.bench([m], [1, 0]), "--batch 0: expected an integer >= 1"),
    (lambda m: api.bench([m], []), "--batch: expected at least one batch size"),
    (lambda m: api.run(m, threads=0), "--threads 0"),
    (lambda m: api.profile(m, runs=0), "--runs 0"),
    (lambda m: api.profile(m, batch=0), "--batch 0"),
    (lambda m: api.profile(m, threads=10**6), "--threads 1000000"),
    (lambda m: api.export("seeded:ps_resnet_digits", "x.onnx", opset=99), "--opset 99: expected an integer >= 13 and <= 28"),
    (lambda m: api.export("seeded:ps_resnet_digits", "x.onnx", tolerance=-1.0), "--tolerance -1.0"),
    (lambda m: api.export("seeded:ps_resnet_digits", "x.onnx", threads=0), "--threads 0"),
    (lambda m: api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output="x", tolerance=float("inf")),
     "--tolerance inf"),
    (lambda m: api.compile("seeded:ps_resnet_digits", target="llvm", output="x", num_cores=0), "--num-cores 0"),
    (lambda m: api.compile("seeded:ps_resnet_digits", target="llvm", output="x", tune_trials=-3),
     "--tune-trials -3: expected an integer >= 0"),
    (lambda m: api.verify(m, "seeded:ps_resnet_digits", tolerance=5.0), "--tolerance 5.0"),
    (lambda m: api.report("x", quick=True, threads=0), "--threads 0"),
], ids=lambda v: None)
def test_api_refuses_the_same_ranges(dynamic_onnx, tmp_path, monkeypatch, call, expect) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PsdeployError, match="^" + expect.replace("(", r"\(").replace("+", r"\+")):
        call(dynamic_onnx)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("body, key", [
    ("backend: {target: llvm, num_cores: 0}", "'backend.num_cores'"),
    ("backend: {target: llvm}\ntuning: {trials: -1}", "'tuning.trials'"),
    ("backend: {target: llvm}\ntolerance: 2.0", "'tolerance'"),
    ("backend: {target: llvm}\ntolerance: -1.0e-4", "'tolerance'"),
])
def test_compile_recipe_numbers_have_the_same_ranges(tmp_path, body, key) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {checkpoint: x}\n" + body + "\n")
    _fails("compile", "--recipe", str(path), "-o", str(tmp_path / "out"), expect=key)


@pytest.mark.parametrize("body, key", [
    ("threads: 0", "'threads'"),
    ("timing: {warmup: -1}", "'timing.warmup'"),
    ("timing: {max_warmup: -1}", "'timing.max_warmup'"),
    ("timing: {iters: 29}", "'timing.iters'"),
    ("timing: {min_seconds: -1.0}", "'timing.min_seconds'"),
    ("layers: {batches: [0]}", "'layers.batches.0'"),
    ("networks: {batches: [-8]}", "'networks.batches.0'"),
    ("tvm: {trials: -1}", "'tvm.trials'"),
])
def test_report_recipe_numbers_have_the_same_ranges(tmp_path, body, key) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(body + "\n")
    _fails("report", "--recipe", str(path), "-o", str(tmp_path / "out"), expect=key)


def test_opset_bound_is_the_pinned_onnx_newest() -> None:
    assert bounds.OPSET.high == onnx.defs.onnx_opset_version()


@pytest.mark.parametrize("bound, inside, outside", [
    (bounds.Bound("-n", 1, 3), [1, 2, 3], [0, 4, 1.5, True, "2", None]),
    (bounds.Bound("-x", 0, 1, real=True), [0, 0.5, 1], [-1e-9, 1.0000001, float("nan"), float("inf"), "0.5"]),
    (bounds.Bound("-k", 30), [30, 10**9], [29, -30]),
])
def test_bound_check(bound, inside, outside) -> None:
    for value in inside:
        assert bound.check(value) == value
    for value in outside:
        with pytest.raises(PsdeployError, match=f"^{bound.option} "):
            bound.check(value)
