"""TVM artifacts: llvm runs and verifies, cuda builds here and refuses to run without a GPU,
the tuning database is validated, reused and survives Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from psdeploy.backends import BuildOptions, Manifest, open_runner, parse_target
from psdeploy.backends.tvm.host import cuda_available
from psdeploy.backends.tvm.tuning_db import META_NAME, RECORDS, TuningDatabase
from psdeploy.compile import CompileRequest, CompileResult, compile_model
from psdeploy.errors import PsdeployError
from psdeploy.load import load_model
from tests.conftest import TVM_TOL, assert_runs_like_torch

pytest.importorskip("tvm")


def _compile(tmp_path: Path, target: str, name: str, trials: int = 0, **kw) -> CompileResult:
    options = BuildOptions(tune_trials=trials, untuned=not trials, tuning_db=tmp_path / "db")
    return compile_model(CompileRequest("seeded:ps_resnet_digits", parse_target(target), tmp_path / name, options,
                                        **kw))


def test_llvm_untuned_builds_and_verifies(tmp_path) -> None:
    result = _compile(tmp_path, "llvm", "llvm")
    assert result.ran and result.parity.passed
    assert result.manifest.tuning.untuned and (tmp_path / "llvm" / "module.so").exists()
    runner = open_runner(tmp_path / "llvm")
    assert_runs_like_torch(runner.run, load_model("seeded:ps_resnet_digits").model, (1, 3, 32, 32), TVM_TOL)
    from psdeploy import api

    rows = api.profile(tmp_path / "llvm", runs=2, threads=1).nodes  # the VM's own per-call timing
    kernels = [r for r in rows if r.op_type == "kernel"]
    assert any("conv2d" in r.name for r in kernels) and all(r.calls_per_run >= 1 for r in kernels)


def test_cuda_builds_without_gpu_and_refuses_to_run(tmp_path) -> None:
    result = _compile(tmp_path, "cuda", "cuda")
    manifest = Manifest.read(tmp_path / "cuda")
    assert (tmp_path / "cuda" / "module.so").stat().st_size > 0
    assert manifest.target_spec["arch"] == "sm_90"
    if cuda_available():
        assert result.ran and result.parity.passed
    else:
        assert not result.ran and "no CUDA GPU" in manifest.parity["status"]
        with pytest.raises(PsdeployError, match="no CUDA GPU is visible"):
            open_runner(tmp_path / "cuda")


def test_code_for_a_cpu_this_one_cannot_run_builds_and_is_never_run_here(tmp_path, monkeypatch) -> None:
    """A module for AVX-512 dies with SIGILL/SIGSEGV on an AVX2 CPU: it is built, not verified, and
    running or tuning it here is refused in one line (this CPU is made to look AVX2-only)."""
    from click.testing import CliRunner

    from psdeploy.backends.tvm import host
    from psdeploy.cli import main

    monkeypatch.setattr(host, "host_cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "f16c"}))
    result = compile_model(CompileRequest("seeded:ps_resnet_digits", parse_target("llvm", mcpu="skylake-avx512"),
                                          tmp_path / "x", BuildOptions(untuned=True, tuning_db=tmp_path / "db")))
    status = Manifest.read(tmp_path / "x").parity["status"]
    assert not result.ran and (tmp_path / "x" / "module.so").stat().st_size > 0
    assert status.startswith("not run:") and "lacks avx512f" in status and "skylake-avx512" in status
    with pytest.raises(PsdeployError, match="lacks avx512f"):
        open_runner(tmp_path / "x")
    for args in (["run", str(tmp_path / "x")],
                 ["compile", "seeded:ps_resnet_digits", "--target", "llvm", "--mcpu", "skylake-avx512",
                  "--tune-trials", "8", "--tuning-db", str(tmp_path / "db"), "-o", str(tmp_path / "tuned")]):
        cli = CliRunner().invoke(main, args)
        assert cli.exit_code == 2 and "lacks avx512f" in cli.output and len(cli.output.strip().splitlines()) == 1
    assert not (tmp_path / "tuned").exists()


def test_tvm_builds_the_fused_lowering_by_default(monkeypatch) -> None:
    """A compile for TVM with no --lowering builds ``fused``, the form the committed databases hold."""
    import psdeploy.api
    from psdeploy import api
    from psdeploy.backends import BACKENDS

    requests: list[CompileRequest] = []
    monkeypatch.setattr(psdeploy.api, "compile_model", requests.append)
    api.compile("seeded:ps_resnet_digits", target="llvm", output="x")
    assert BACKENDS["tvm"].default_lowering == "fused" and requests[0].lowering == "fused"


def _compile_cli(tmp_path: Path, *flags: str):
    from click.testing import CliRunner

    from psdeploy.cli import main

    return CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--target", "llvm", "--tuning-db",
                                     str(tmp_path / "db"), "-o", str(tmp_path / "x"), *flags])


def test_a_build_with_no_budget_and_tasks_the_database_lacks_is_refused(tmp_path) -> None:
    """Tuning takes long and untuned code is many times slower: either is the user's choice, so the build
    is refused in one line naming both ways on, and nothing is written."""
    cli = _compile_cli(tmp_path)
    assert cli.exit_code == 2 and len(cli.output.strip().splitlines()) == 1, cli.output
    assert "tasks have no record in the tuning database" in cli.output
    assert "--tune-time" in cli.output and "--untuned" in cli.output
    assert not (tmp_path / "x").exists()


def test_a_build_asked_untuned_says_how_many_tasks_it_built_untuned(tmp_path) -> None:
    """With --untuned, no budget and an empty database, the warning counts every task and says it was asked
    (16x16 inputs: the held-out check of the 32x32 demo images, slow on untuned kernels, does not apply)."""
    import re

    cli = _compile_cli(tmp_path, "--untuned", "--input-shape", "1,3,16,16")
    assert cli.exit_code == 0, cli.output
    manifest = Manifest.read(tmp_path / "x")
    output = " ".join(cli.output.split())
    warning = re.search(r"WARNING: (\d+) of (\d+) tasks have no record", output)
    assert manifest.lowering == "fused" and manifest.tuning.tasks > 0
    assert warning and warning.groups() == (str(manifest.tuning.tasks),) * 2 and "as --untuned asked" in output


def test_the_refusal_names_the_default_forms_a_build_leaves(tmp_path) -> None:
    """A database that holds records lacks tasks of a build in another lowering and layout: the flags back to
    TVM's defaults (the committed databases' forms) are named, in the refusal and, with --untuned, in a note."""
    import onnx
    from onnx import TensorProto, helper

    from psdeploy.backends.artifact import TuningSummary
    from psdeploy.backends.tvm import TvmBackend
    from psdeploy.backends.tvm.build import check_untuned
    from psdeploy.export import ExportRecord

    target = parse_target("llvm")
    path = tmp_path / "g.onnx"  # only its export record is read: a one-node graph stamped as a grouped export
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 32, 32]) for name in "xy")
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    ExportRecord(arch="ps_resnet_digits", lowering="grouped", input_shape=(1, 3, 32, 32), dynamic_batch=False,
                 source="seeded:ps_resnet_digits", source_sha256="0" * 64, opset=18).stamp(model)
    onnx.save(model, str(path))
    db = TuningDatabase(tmp_path / "db", target)
    db.directory.mkdir(parents=True)
    (db.directory / RECORDS).write_text("[0]\n")  # read for its size only

    def summary() -> TuningSummary:
        return TuningSummary(requested_trials=0, per_task_budget=0, tasks=5, tasks_already_tuned=2, untuned=True)

    with pytest.raises(PsdeployError) as refused:
        check_untuned(summary(), db, path, target, BuildOptions(layout="nchw"), TvmBackend.default_lowering)
    message = str(refused.value)
    assert message.startswith("--target llvm: 3 of 5 tasks have no record") and "\n" not in message
    assert "--lowering fused (this build: grouped), --layout nchwc (this build: nchw)" in message
    asked = summary()
    check_untuned(asked, db, path, target, BuildOptions(layout="nchw", untuned=True), TvmBackend.default_lowering)
    assert len(asked.notes) == 1 and "--lowering fused (this build: grouped)" in asked.notes[0]
    with pytest.raises(PsdeployError) as plain:  # in the default forms: nothing to name
        check_untuned(summary(), db, path, target, BuildOptions(), "grouped")
    assert "this build" not in str(plain.value)


@pytest.mark.skipif("cuda_available()", reason="a GPU is visible: tuning for cuda can measure here")
def test_cuda_tuning_without_a_gpu_is_refused_before_any_work(tmp_path) -> None:
    from click.testing import CliRunner

    from psdeploy.cli import main

    out = tmp_path / "cu"
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--target", "cuda", "--tune-time", "1m",
                                       "-o", str(out), "--tuning-db", str(tmp_path / "db")])
    assert result.exit_code == 2 and "no CUDA GPU is visible here" in result.output and "--rpc" in result.output
    assert not out.exists() and not (tmp_path / "db").exists()


@pytest.mark.parametrize("text, message", [
    ("vulkan", "unknown target"),
    ("{not json", "not valid JSON"),
    ('{"kind": "rocm"}', "not supported"),
    ('{"mcpu": "x"}', 'needs a "kind"'),
])
def test_bad_targets(text, message) -> None:
    with pytest.raises(PsdeployError, match=message):
        parse_target(text)


def test_json_target_and_avx512() -> None:
    spec = parse_target('{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 16}')
    assert spec.tvm_target["mcpu"] == "skylake-avx512" and "skylake-avx512" in spec.key


def test_missing_toolchain_names_the_extra(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("No module named 'tvm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(PsdeployError, match=r"pip install 'psdeploy\[tvm\]'"):
        parse_target("llvm")


def test_foreign_tuning_database_refused(tmp_path) -> None:
    spec = parse_target("llvm")
    db = TuningDatabase(tmp_path, spec)
    db.open()
    other = parse_target('{"kind": "llvm", "mcpu": "haswell", "num-cores": 4}')
    (tmp_path / other.key).mkdir()
    (tmp_path / other.key / META_NAME).write_text(json.dumps({"format": 1, "target": spec.tvm_target}))
    with pytest.raises(PsdeployError, match="foreign tuning database"):
        TuningDatabase(tmp_path, other).open()
    (tmp_path / spec.key / META_NAME).unlink()  # records without psdeploy's target stamp
    with pytest.raises(PsdeployError, match="foreign tuning database"):
        TuningDatabase(tmp_path, spec).open()


def test_corrupted_tuning_database_refused(tmp_path) -> None:
    spec = parse_target("llvm")
    TuningDatabase(tmp_path, spec).open()
    (tmp_path / spec.key / RECORDS).write_text('[0, [["x"]]]\n{{{garbage\n[1]\n')
    with pytest.raises(PsdeployError, match="corrupted at line 2"):
        TuningDatabase(tmp_path, spec).open()
    (tmp_path / spec.key / RECORDS).write_text('[0, [["x"]]]\n')  # JSON, but no MetaSchedule record
    with pytest.raises(PsdeployError, match="corrupted records"):
        TuningDatabase(tmp_path, spec).open()


def test_half_written_last_line_is_dropped(tmp_path) -> None:
    spec = parse_target("llvm")
    TuningDatabase(tmp_path, spec).open()
    path = tmp_path / spec.key / RECORDS
    path.write_text('[0, [["x"]]]\n[1, [["y"')
    db = TuningDatabase(tmp_path, spec)
    db.validate()
    assert path.read_text() == '[0, [["x"]]]\n' and "half-written" in db.notes[0]


def test_ctrl_c_keeps_records_tuning_resumes_and_tuned_module_is_exact(tmp_path) -> None:
    """One PSConv layer (few tasks), one trial per task: a SIGINT after the first batch keeps its record
    and that task is then covered; the next build tunes only the rest, the one after tunes nothing and
    reuses every record; the tuned module, run by this test itself, equals the layer's torch reference."""
    from psdeploy.backends import BuildOptions
    from psdeploy.backends.tvm import TvmBackend
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.backends.tvm.tuning import plan_tuning, tune
    from psdeploy.export.onnx_export import export_to_file
    from psdeploy.report.cases import LayerSpec, layer_cases
    from tests.conftest import TVM_TOL, assert_runs_like_torch

    spec = LayerSpec(channels=16, size=9, stride=1, batch=1)
    case = layer_cases(spec, ["grouped"], reference_cases=("plain",))[-1]
    onnx_path = tmp_path / "layer.onnx"
    export_to_file(case.module, onnx_path, spec.shape, ["y"])
    target = parse_target("llvm")
    backend, options = TvmBackend(), BuildOptions(tune_trials=1, tuning_db=tmp_path / "db")
    layout = backend.conv_layout(target, options)  # the tasks the build will tune: in its default layout
    mod = lower(import_onnx(onnx_path, spec.shape, layout), target, 0, layout)
    tasks = len(plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), 1).tasks)
    records = tmp_path / "db" / target.key / RECORDS

    def interrupt(trials: int) -> None:
        signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=tasks, on_batch=interrupt)
    assert len(records.read_text().splitlines()) == 1
    plan = plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), tasks)
    assert plan.per_task == 1 and len(plan.todo) == tasks - 1

    options = BuildOptions(tune_trials=tasks, tuning_db=tmp_path / "db")
    resumed = backend.build(onnx_path, spec.shape, target, options, tmp_path)["tuning"]
    assert resumed.tasks_already_tuned == 1 and resumed.tasks_tuned == tasks - 1
    measured = records.read_text()
    left = len(plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), tasks).todo)  # a failed trial
    again = backend.build(onnx_path, spec.shape, target, options, tmp_path)["tuning"]
    assert again.tasks_already_tuned == tasks - left and again.tasks_tuned == left
    assert again.trials_measured <= left and records.read_text().startswith(measured)  # covered: reused
    run, _ = backend.open(tmp_path / backend.module_file, target, threads=1)
    assert_runs_like_torch(run, case.reference, spec.shape, TVM_TOL)


def test_gathers_legalize_without_a_warning_each(tmp_path, capfd) -> None:
    """TOPI's take logs a warning per node from C++; psdeploy's legalization emits the same gather quietly."""
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.export import export_onnx
    from psdeploy.load import load_model

    path = tmp_path / "g.onnx"
    export_onnx(load_model("seeded:ps_resnet_digits"), path)
    capfd.readouterr()
    for target in ("llvm", "cuda"):
        mod = lower(import_onnx(path, (1, 3, 32, 32)), parse_target(target))
        assert sum("take" in gv.name_hint for gv in mod.get_global_vars()) >= 1
    assert "Fast mode" not in capfd.readouterr().err


@pytest.mark.parametrize("indices", [[3, 4, 5, 0, 1, 2, 6, 7], [7, 0, 6, 1, 5, 2, 4, 3], [-1, 2, -8, 5, 4, 3, 1, -2],
                                     [2, 2, 0, 7]])
def test_a_baked_gather_computes_what_take_does(indices) -> None:
    """Constant indices (runs, singletons, negatives counted from the end, repeats, fewer than the axis)
    baked into the kernel: the kernel takes no index argument and matches numpy's take."""
    import numpy as np
    import tvm
    from tvm import relax

    from psdeploy.backends.tvm.take import use_baked_take

    use_baked_take()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8, 3, 5), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.take(x, relax.const(np.array(indices, "int64")), axis=1))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    takes = [gv for gv in mod.get_global_vars() if gv.name_hint.startswith("take")]
    assert len(takes) == 1 and len(mod[takes[0]].params) == 2
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    data = np.random.default_rng(0).standard_normal((2, 8, 3, 5)).astype("float32")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(data)).numpy(), np.take(data, indices, axis=1))



def test_index_runs_split_where_indices_stop_being_consecutive() -> None:
    import numpy as np

    from psdeploy.backends.tvm.take import index_runs

    assert index_runs(np.array([8, 9, 10, 0, 1, 5])) == ([0, 3, 5], [8, -3, 0])
    assert index_runs(np.arange(4)) == ([0], [0])
