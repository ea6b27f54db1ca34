"""Deploy bundles: built here, run by run.py in a fresh venv of numpy alone (another CPython where one is
installed), with TVM's runtime only; every bad bundle is one line and exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psdeploy.backends import BuildOptions, parse_target
from psdeploy.backends.tvm.host import cuda_available
from psdeploy.bundle import runner
from psdeploy.cli import main
from psdeploy.compile import CompileRequest, compile_model
from psdeploy.load import load_model
from tests.conftest import TVM_TOL, assert_runs_like_torch

pytest.importorskip("tvm")

OTHER_PYTHONS = ("3.12", "3.13", "3.10")  # a CPython other than the build's, where one is installed


def _other_python() -> tuple[str, str]:
    """(version, interpreter) of another CPython found here (PATH, pyenv, uv's), else this one."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    for version in (v for v in OTHER_PYTHONS if v != here):
        for candidate in (shutil.which(f"python{version}"),
                          *sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")),
                          *sorted(Path.home().glob(f".local/share/uv/python/cpython-{version}*/bin/python{version}"))):
            if candidate and subprocess.run([str(candidate), "-c", "import venv"], capture_output=True).returncode == 0:
                return version, str(candidate)
    return here, sys.executable


def _compile(tmp: Path, source: str, target: str = "llvm") -> Path:
    options = BuildOptions(untuned=True, tuning_db=tmp / "db")
    return compile_model(CompileRequest(source, parse_target(target), tmp / f"{Path(source).stem}-{target}",
                                        options)).output


def _bundle(*args: str):
    return CliRunner().invoke(main, ["bundle", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A PS-ResNet llvm artifact (digits size, compiled from its exported ONNX, which the bundle reuses) bundled
    twice over for another CPython, weights shipped; again with its seeded weights regenerated; a fresh venv of
    that CPython with numpy alone."""
    from psdeploy import api

    tmp = tmp_path_factory.mktemp("bundle")
    version, interpreter = _other_python()
    onnx = api.export(api.load("seeded:ps_resnet_digits"), tmp / "ps.onnx").path
    ps = _compile(tmp, str(onnx))
    shipped = _bundle(str(ps), str(ps), "-o", str(tmp / "shipped"), "--python", version)
    assert shipped.exit_code == 0, shipped.output
    regenerated = _bundle(str(ps), "-o", str(tmp / "regenerated"), "--python", version, "--regenerate-seeded")
    assert regenerated.exit_code == 0, regenerated.output
    subprocess.run([interpreter, "-m", "venv", str(tmp / "venv")], check=True)
    subprocess.run([str(tmp / "venv/bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "numpy"], check=True)
    return {"tmp": tmp, "python": str(tmp / "venv/bin/python"), "version": version, "ps": ps,
            "shipped": tmp / "shipped", "regenerated": tmp / "regenerated", "cli": shipped.output}


def _run(built: dict, bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([built["python"], str(bundle / "run.py"), *args], capture_output=True, text=True,
                          cwd=built["tmp"])


def _copy(built: dict, bundle: Path, name: str) -> Path:
    return Path(shutil.copytree(bundle, built["tmp"] / name))


def _one_line_error(done: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert lines[-1].startswith("error: ") and all(w in lines[-1] for w in words), lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_runner_in_a_fresh_venv_with_numpy_alone_matches_and_loads_only_the_runtime(built) -> None:
    out = built["tmp"] / "shipped.json"
    done = _run(built, built["shipped"], "--json", str(out), "--iters", "6", "--loads", "2", "--warmup", "2")
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["environment"]["python"].startswith(built["version"])
    names = [a["name"] for a in results["artifacts"]]
    assert names == ["ps-llvm", "ps-llvm-2"]  # one artifact twice: a group of two, numbered apart
    for a in results["artifacts"]:
        assert a["parity"]["rel_err"] <= a["parity"]["tolerance"] == pytest.approx(1e-4)
        assert a["rounds"] == 6 and a["stats"]["iterations"] == 12 and len(a["load_medians_ms"]) == 2
        assert a["ratio_p10"] <= a["ratio"] <= a["ratio_p90"] and len(a["load_ratios"]) == 2
    assert results["artifacts"][0]["ratio"] == 1.0  # ratios to the group's first, as bench
    loaded = [Path(p).name for p in results["loaded_libraries"]]
    assert "libtvm_runtime.so" in loaded and not any("libtvm_compiler" in p for p in loaded)
    bundled = [p.name for p in built["shipped"].rglob("*")]
    assert not any("compiler" in n for n in bundled) and "libtvm_runtime.so" in bundled
    assert sys.version_info[:2] == (3, 11) or built["version"] != "3.11"  # another CPython where one is installed


def test_modules_with_weights_apart_compute_the_checkpoint(built) -> None:
    """The test's own check: the bundled module and its shipped weights, run here, against torch."""
    import tvm
    from tvm import relax

    manifest = json.loads((built["shipped"] / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(built["shipped"] / entry["module"])), tvm.cpu())
    with np.load(built["shipped"] / entry["weights"]["file"]) as npz:
        weights = [tvm.runtime.tensor(npz[f"w{i}"]) for i in range(entry["weights"]["count"])]
    assert len(weights) > 10  # every conv's weight went apart
    run = lambda x: [vm["main"](tvm.runtime.tensor(x), *weights).numpy()]  # noqa: E731
    assert_runs_like_torch(run, load_model("seeded:ps_resnet_digits").model, (1, 3, 32, 32), TVM_TOL)
    assert (built["shipped"] / entry["module"]).stat().st_size < (built["ps"] / "module.so").stat().st_size


def test_regenerated_seeded_weights_are_not_shipped_and_match(built) -> None:
    manifest = json.loads((built["regenerated"] / "manifest.json").read_text())
    assert not list(built["regenerated"].rglob("weights.npz"))
    specs = manifest["artifacts"][0]["weights"]["regenerate"]
    assert all(runner.digest(runner.regenerate(s)) == s["sha256"] for s in specs)
    out = built["tmp"] / "regenerated.json"
    done = _run(built, built["regenerated"], "--json", str(out), "--check-only")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["artifacts"][0]["parity"]["rel_err"] <= 1e-4


def test_the_cli_says_size_and_what_takes_it(built) -> None:
    assert "MiB" in built["cli"] and "modules" in built["cli"] and "weights" in built["cli"]
    assert "run.py" in built["cli"]
    again = _bundle(str(built["ps"]), "-o", str(built["shipped"]))
    assert again.exit_code == 2 and "already exists; pass --force" in again.output


def test_a_missing_file_is_one_line(built) -> None:
    bundle = _copy(built, built["shipped"], "missing")
    next(bundle.rglob("weights.npz")).unlink()
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "weights.npz", "missing")


def test_an_altered_file_is_one_line(built) -> None:
    bundle = _copy(built, built["shipped"], "altered")
    module = next(bundle.rglob("module.so"))
    data = bytearray(module.read_bytes())
    data[len(data) // 2] ^= 0xFF
    module.write_bytes(bytes(data))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "module.so", "altered")


def test_a_wrong_python_is_one_line(built) -> None:
    bundle = _copy(built, built["shipped"], "wrong-python")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["python"] = "3.99"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "Python 3.99", "--python")


def test_files_not_listed_or_outside_are_never_loaded(built) -> None:
    bundle = _copy(built, built["shipped"], "outside")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["module"] = "../evil.so"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "../evil.so", "not listed")
    manifest["files"]["../evil.so"] = manifest["files"][manifest["artifacts"][1]["module"]]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "../evil.so", "not a path inside")


def test_a_module_that_computes_otherwise_fails_its_check(built) -> None:
    """Expected outputs changed with their hash (as if the module computed something else): exit 1."""
    bundle = _copy(built, built["shipped"], "otherwise")
    manifest = json.loads((bundle / "manifest.json").read_text())
    name = manifest["artifacts"][0]["expected"]
    with np.load(bundle / name) as npz:
        changed = {k: npz[k] * (1 if k.endswith(("_shape", "_maxabs")) else 1.01) for k in npz.files}
    np.savez(bundle / name, **changed)
    manifest["files"][name] = {"sha256": runner.file_digest(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 1, "exceeds")


def test_regenerated_weights_that_differ_are_one_line(built) -> None:
    bundle = _copy(built, built["regenerated"], "drawn-otherwise")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["weights"]["regenerate"][0]["seed"] += 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_run(built, bundle, "--json", "x.json"), 2, "w0", "differs")


def test_results_are_never_half_written_nor_overwritten(built) -> None:
    out = built["tmp"] / "kept.json"
    out.write_text("earlier")
    _one_line_error(_run(built, built["shipped"], "--json", str(out), "--check-only"), 2, "--json", "--force")
    assert out.read_text() == "earlier"
    _one_line_error(_run(built, built["shipped"], "--iters", "0"), 2, "--iters 0")


def test_a_cuda_bundle_builds_here_and_refuses_to_run_without_a_gpu(built) -> None:
    """CUDA modules with seeded weights regenerated: expected outputs from their CPU twin; no GPU, one line."""
    cuda = _compile(built["tmp"], "seeded:ps_resnet_digits", "cuda")
    done = _bundle(str(cuda), "-o", str(built["tmp"] / "cuda"), "--python", built["version"], "--regenerate-seeded")
    assert done.exit_code == 0, done.output
    runtime = {p.name for p in (built["tmp"] / "cuda" / "runtime").iterdir()}
    assert {"libtvm_runtime.so", "libtvm_runtime_cuda.so", "libcudart.so.13"} <= runtime
    run = _run(built, built["tmp"] / "cuda", "--json", str(built["tmp"] / "cuda.json"), "--check-only")
    if cuda_available():
        assert run.returncode == 0, run.stderr
    else:
        _one_line_error(run, 2, "CUDA", "GPU")


def test_rounds_interleave_as_bench_does() -> None:
    """Each case's turn: one untimed run after another case, then its block; the order rotates each round."""
    calls: list[str] = []
    runs = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    runner.time_group(runs, 3, {"warmup": 1, "max_warmup": 1, "block": 2})
    timed = calls[3:]  # after one warm-up round
    assert timed == list("aaabbbccc" "bbbcccaaa" "cccaaabbb")


def test_a_recipe_bundle_runs_there_and_reports_here(tmp_path) -> None:
    """The GPU report's path on a CPU: a report recipe's TVM cases bundled, with its eager-PyTorch layer cases,
    run by run.py, and its results turned into the report's tables here."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("name: tiny\nbackends: [torch, tvm-llvm]\ntiming: {warmup: 2, max_warmup: 4, iters: 30, loads: 2}\n"
                      "layers: {shapes: [[16, 8]], strides: [1], batches: [2], lowerings: [grouped],"
                      " cases: [plain, dilated2]}\n")
    done = _bundle("--recipe", str(recipe), "-o", str(tmp_path / "b"))
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [e["case"] for e in manifest["artifacts"]] == ["plain", "dilated2", "psconv_grouped"]
    assert {e["group"] for e in manifest["artifacts"]} == {"tvm-llvm 16@8 s1 b2"}
    assert manifest["report"]["left_out"] == ["torch 16@8 s1 b2 psconv_grouped (deployed lowerings need psdeploy there)"]
    assert [(e["case"], e["torch"]["dilation"]) for e in manifest["torch"]] == [("plain", 1), ("dilated2", 2)]
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, str(tmp_path / "b" / "run.py"), "--json", str(results)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = CliRunner().invoke(main, ["report", "--from-bundle-results", str(results), "-o", str(tmp_path / "r")],
                                catch_exceptions=False)
    assert report.exit_code == 0, report.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {(m["backend"], m["case"]): m for m in data["measurements"]}
    assert set(rows) == {("tvm-llvm", "plain"), ("tvm-llvm", "dilated2"), ("tvm-llvm", "psconv_grouped"),
                         ("torch", "plain"), ("torch", "dilated2")}  # torch eager: this Python has torch
    assert rows[("torch", "dilated2")]["parity_rel_err"] == 0.0 and rows[("torch", "plain")]["ratio"] == 1.0
    assert rows[("tvm-llvm", "plain")]["ratio"] == 1.0 and rows[("tvm-llvm", "dilated2")]["parity_rel_err"] <= 1e-4
    assert "psconv_grouped" in (tmp_path / "r" / "report.md").read_text()


def test_rounds_fit_the_time_budget_and_never_fall_below_five_per_load() -> None:
    timing = {"warmup": 20, "max_warmup": 60, "block": 2}
    fitted, iters = runner.within(10.0, 0.01, timing, 200, 3)  # 900 rounds affordable: nothing cut
    assert iters == 200 and fitted["max_warmup"] == 60
    fitted, iters = runner.within(10.0, 0.1, timing, 200, 3)  # 90 affordable: warm-up 7 per load, 69 timed
    assert (fitted["warmup"], fitted["max_warmup"], iters) == (7, 7, 69)
    assert runner.within(1.0, 1.0, timing, 200, 3)[1] == 15  # over budget: still 5 timed rounds per load
