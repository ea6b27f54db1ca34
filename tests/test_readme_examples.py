"""README's "Use it" examples, as written there, on the demo checkpoint: the command lines and the Python
snippet (a dynamic-batch export compiled for OpenVINO keeps its dynamic batch, and bench runs it at 1 and 8).

``my_ps_resnet50.pth`` stands for the demo checkpoint; ``resnet50-ov``, the second model benched, is the
plain demo network compiled the same way."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.cli import main
from tests.conftest import DEMO_CHECKPOINT, REPO

pytest.importorskip("openvino")


def _use_it_blocks() -> tuple[list[list[str]], str]:
    """(the command lines, the Python snippet) of README's "Use it" section, the checkpoint replaced by the demo."""
    section = (REPO / "README.md").read_text().split("## Use it", 1)[1].split("\n## ", 1)[0]
    shell, python = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.DOTALL)[:2]
    shell, python = (block.replace("my_ps_resnet50.pth", str(DEMO_CHECKPOINT)) for block in (shell, python))
    commands = [shlex.split(line)[1:] for line in shell.splitlines() if line.startswith("psdeploy ")]
    return commands, python


@pytest.fixture(scope="module")
def plain_artifact(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("plain")
    onnx = api.export("seeded:resnet_digits", work / "resnet50.onnx", dynamic_batch=True)
    return api.compile(str(onnx.path), target="openvino-cpu", output=work / "resnet50-ov").output


def _manifest(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def test_readme_command_lines(tmp_path, monkeypatch, plain_artifact) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(plain_artifact, "resnet50-ov")
    commands, _ = _use_it_blocks()
    assert [c[0] for c in commands] == ["inspect", "export", "compile", "bench"]
    for args in commands:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"psdeploy {' '.join(args)}:\n{result.output}"
    manifest = _manifest(tmp_path / "ps50-ov")
    assert manifest["input_shape"] == [0, 3, 32, 32]  # the ONNX's dynamic batch kept
    assert {r["input"] for r in manifest["parity"]["cases"]} == {"1x3x32x32", "3x3x32x32"}  # checked at two batches
    assert "ps50-ov" in result.output and "resnet50-ov" in result.output


def test_readme_python_example(tmp_path, monkeypatch, plain_artifact) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(plain_artifact, "resnet50-ov")
    _, snippet = _use_it_blocks()
    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md (Use it)", "exec"), scope)  # noqa: S102 - the README's own text
    result = scope["result"]
    assert sorted({(r.name, r.batch) for r in result.rows}) == [("ps50-ov", 1), ("ps50-ov", 8), ("resnet50-ov", 1),
                                                                 ("resnet50-ov", 8)]
    assert scope["artifact"].manifest.input_shape == [0, 3, 32, 32]
    assert scope["artifact"].parity.passed


def test_verify_checks_a_dynamic_artifact_at_two_batches(plain_artifact) -> None:
    report = api.verify(plain_artifact, "seeded:resnet_digits")
    report.raise_if_failed()
    assert {c.input_shape[0] for c in report.cases} == {1, 3}
