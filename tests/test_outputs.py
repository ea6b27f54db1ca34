"""One rule for every output (psdeploy/fileio.py), held for every command that writes: an existing output is
refused in one line naming the option and --force, byte for byte untouched; --force replaces it whole; missing
parent folders are created (and removed again when the write fails); what psdeploy creates gets the modes the
umask gives. And recipes: their paths are relative to the recipe file, wherever psdeploy runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.backends.targets import Target
from psdeploy.backends.tvm.tuning_db import META_NAME, TuningDatabase
from psdeploy.cli import main
from psdeploy.errors import PsdeployError, VerificationError
from psdeploy.report import ReportConfig, run_report
from tests.conftest import DEMO_CHECKPOINT, REPO

PRECIOUS = b"an earlier output, not to be lost"


@dataclass
class Sources:
    onnx: Path  # the demo network, exported once
    tuning_db: Path  # a stamped, empty tuning database (made without TVM)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    work = tmp_path_factory.mktemp("sources")
    onnx_path = api.export(str(DEMO_CHECKPOINT), work / "digits.onnx").path
    target = Target("tvm", "llvm", {"kind": "llvm", "mcpu": "generic", "num-cores": 1})
    TuningDatabase(work / "db", target).validate()  # the stamp alone: prune-db finds a database there
    return Sources(onnx_path, work / "db")


@pytest.fixture(scope="module")
def tiny_report_data():
    """One small report, timed once; the report tests write it (``run_report`` stands in for the timing)."""
    return run_report(ReportConfig(name="tiny", threads=1, backends=["onnxruntime"], warmup=0, max_warmup=2,
                                   iters=30, loads=1, layer_shapes=[(8, 8)], layer_cases=("plain",)))


@dataclass
class Writer:
    option: str
    directory: bool
    args: Callable[[Sources, Path], list[str]]
    check: Callable[[Path], None]  # what it wrote is what it should be
    needs_tvm: bool = False  # to write (refusing needs nothing)


def _exported(path: Path) -> None:
    onnx.checker.check_model(onnx.load(str(path)))


WRITERS = {
    "export": Writer("-o", False, lambda s, out: ["export", str(DEMO_CHECKPOINT), "-o", str(out)], _exported),
    # from the checkpoint: the artifact then holds the ONNX export too (written by export's own writer)
    "compile": Writer("-o", True, lambda s, out: ["compile", str(DEMO_CHECKPOINT), "--target", "onnxruntime-cpu",
                                                  "-o", str(out)],
                      lambda out: json.loads((out / "manifest.json").read_text())),
    "report": Writer("-o", True, lambda s, out: ["report", "--quick", "-o", str(out)],
                     lambda out: json.loads((out / "report.json").read_text())),
    "run": Writer("--save-output", False, lambda s, out: ["run", str(s.onnx), "--save-output", str(out)],
                  lambda out: np.load(out)),
    "bench": Writer("--json", False, lambda s, out: ["bench", str(s.onnx), "--iters", "30", "--warmup", "0",
                                                     "--loads", "1", "--threads", "1", "--json", str(out)],
                    lambda out: json.loads(out.read_text())["rows"]),
    "prune-db": Writer("-o", True, lambda s, out: ["prune-db", str(s.tuning_db), "-o", str(out)],
                       lambda out: [p for p in out.iterdir() if (p / META_NAME).is_file()][0], needs_tvm=True),
}


@pytest.fixture(params=list(WRITERS))
def writer(request, monkeypatch) -> tuple[str, Writer]:
    if request.param == "report":
        import psdeploy.api

        data = request.getfixturevalue("tiny_report_data")
        monkeypatch.setattr(psdeploy.api, "run_report", lambda config: data)
    return request.param, WRITERS[request.param]


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, hidden ones included, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def _make_existing(out: Path, directory: bool) -> None:
    if directory:
        out.mkdir(parents=True)
        (out / "keep.txt").write_bytes(PRECIOUS)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(PRECIOUS)


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def test_an_existing_output_is_refused_untouched(tmp_path, sources, writer) -> None:
    name, w = writer
    out = tmp_path / "outputs" / ("existing" if w.directory else "existing.out")
    _make_existing(out, w.directory)
    before = _tree(tmp_path / "outputs")
    result = _invoke(w.args(sources, out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {w.option} {out}: already exists; pass --force to replace it"], name
    assert _tree(tmp_path / "outputs") == before


def test_force_replaces_an_existing_output(tmp_path, sources, writer) -> None:
    name, w = writer
    if w.needs_tvm:
        pytest.importorskip("tvm")
    out = tmp_path / "outputs" / ("existing" if w.directory else "existing.out")
    _make_existing(out, w.directory)
    result = _invoke([*w.args(sources, out), "--force"])
    assert result.exit_code == 0, result.output
    if w.directory:
        assert not (out / "keep.txt").exists()
    else:
        assert out.read_bytes() != PRECIOUS
    w.check(out)
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == [out.name]  # no temporary or backup left


def test_missing_parents_are_created_with_the_umask_modes(tmp_path, sources, writer) -> None:
    """Under umask 022 every folder psdeploy creates is 0755 and every file 0644 (mkstemp and mkdtemp would
    leave 0600 and 0700), inside an artifact or report folder too."""
    name, w = writer
    if w.needs_tvm:
        pytest.importorskip("tvm")
    out = tmp_path / "new" / "deeper" / ("made" if w.directory else "made.out")
    previous = os.umask(0o022)
    try:
        result = _invoke(w.args(sources, out))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    w.check(out)
    made = [tmp_path / "new", *sorted((tmp_path / "new").rglob("*"))]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in made}
    assert modes == {str(p.relative_to(tmp_path)): 0o755 if p.is_dir() else 0o644 for p in made}, name


def test_the_python_api_refuses_too_unless_forced(tmp_path, sources) -> None:
    existing = tmp_path / "x.onnx"
    existing.write_bytes(PRECIOUS)
    folder = tmp_path / "folder"
    folder.mkdir()
    for call in (lambda force: api.export(str(DEMO_CHECKPOINT), existing, force=force),
                 lambda force: api.compile(sources.onnx, target="onnxruntime-cpu", output=folder, force=force),
                 lambda force: api.report(folder, quick=True, force=force),
                 lambda force: api.prune_tuning_db(sources.tuning_db, folder, force=force)):
        with pytest.raises(PsdeployError, match=r"^-o .*: already exists; pass --force to replace it$"):
            call(False)
    assert existing.read_bytes() == PRECIOUS and list(folder.iterdir()) == []
    api.export(str(DEMO_CHECKPOINT), existing, force=True)
    _exported(existing)


def test_a_failed_write_removes_the_folders_it_created(tmp_path, monkeypatch) -> None:
    """The export fails its ONNX check after the temporary file (and the folders above it) exist."""
    import psdeploy.export as export_module

    real_runner = export_module.onnxruntime_runner

    def off_by_a_little(path, threads=None):
        assert Path(path).parent == tmp_path / "new" / "deeper"
        run = real_runner(path, threads)
        return lambda x: [y + 1e-2 for y in run(x)]

    monkeypatch.setattr(export_module, "onnxruntime_runner", off_by_a_little)
    (tmp_path / "keep.txt").write_bytes(PRECIOUS)
    with pytest.raises(VerificationError):
        api.export("seeded:ps_resnet_digits", tmp_path / "new" / "deeper" / "net.onnx")
    assert _tree(tmp_path) == {"keep.txt": PRECIOUS}


def test_a_parent_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "taken").write_bytes(PRECIOUS)
    result = _invoke(["export", str(DEMO_CHECKPOINT), "-o", str(tmp_path / "taken" / "d.onnx")])
    assert result.exit_code == 2
    assert f"-o {tmp_path / 'taken' / 'd.onnx'}: {tmp_path / 'taken'} is not a directory" in result.output


# --- recipes: paths relative to the recipe file -----------------------------------------------------------

def test_the_demo_recipe_runs_from_another_folder(tmp_path, monkeypatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.chdir(tmp_path)
    result = _invoke(["compile", "--recipe", str(REPO / "recipes" / "demo" / "openvino-cpu.yaml"), "-o", "ov"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ov" / "manifest.json").read_text())["source"] == str(DEMO_CHECKPOINT)


def test_a_recipes_default_output_is_beside_the_recipe(tmp_path, monkeypatch) -> None:
    """Checkpoint and output named relative to the recipe; run from elsewhere, with the recipe's path given
    relative to there; the output's missing parent is created."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "recipes").mkdir()
    shutil.copy(DEMO_CHECKPOINT, project / "models" / "digits.pth")
    (project / "recipes" / "r.yaml").write_text(
        "model: {checkpoint: ../models/digits.pth}\nbackend: {target: onnxruntime-cpu}\noutput: ../built/digits-ort\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = _invoke(["compile", "--recipe", "../project/recipes/r.yaml"])
    assert result.exit_code == 0, result.output
    assert (project / "built" / "digits-ort" / "manifest.json").is_file()
    assert list((tmp_path / "elsewhere").iterdir()) == []
    again = _invoke(["compile", "--recipe", "../project/recipes/r.yaml"])
    assert again.exit_code == 2 and "-o ../project/built/digits-ort: already exists; pass --force" in again.output


def test_recipe_paths_resolve_beside_the_file_and_names_stay_names(tmp_path) -> None:
    from psdeploy.api.recipes import load_recipe
    from psdeploy.report import load_report_config

    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "int8.yaml"
    path.write_text("model: {checkpoint: ckpt/net.pth}\n"
                    "backend: {target: openvino-cpu, precision: int8, calibration: samples/}\n"
                    "tuning: {database: ../db}\noutput: /absolute/out\n")
    recipe = load_recipe(path)
    assert recipe.model.checkpoint == str(folder / "ckpt" / "net.pth")
    assert recipe.backend.calibration == str(folder / "samples")
    assert recipe.tuning.database == str(tmp_path / "db")
    assert recipe.output == "/absolute/out"
    path.write_text("model: {checkpoint: 'seeded:ps_resnet_digits'}\n"
                    "backend: {target: openvino-cpu, precision: int8, calibration: digits}\n")
    recipe = load_recipe(path)
    assert (recipe.model.checkpoint, recipe.backend.calibration) == ("seeded:ps_resnet_digits", "digits")
    assert recipe.tuning.database == "tuning-db" and recipe.output is None  # not in the recipe: --tuning-db's default

    report = folder / "report.yaml"
    report.write_text("tvm: {database: dbs/tvm}\n")
    assert load_report_config(report, None).tvm_database == str(folder / "dbs" / "tvm")
    report.write_text("tvm: {trials: 0}\n")
    assert load_report_config(report, None).tvm_database == "tuning-db"
