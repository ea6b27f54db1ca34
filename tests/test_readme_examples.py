"""README's "Use it" section run as written, in its order, from a scratch directory: every command line, then
the Python snippet (a dynamic-batch export compiled for OpenVINO keeps its dynamic batch, and bench runs it at 1
and 8). ``my_ps_resnet50.pth`` stands for the demo checkpoint and ``my_resnet50.pth`` for the plain demo network
(``seeded:resnet_digits``): the only words changed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.cli import main
from tests.conftest import DEMO_CHECKPOINT, REPO

pytest.importorskip("openvino")

PLAIN = "seeded:resnet_digits"


def _use_it_blocks() -> tuple[list[list[str]], str]:
    """(the command lines, the Python snippet) of README's "Use it" section, the checkpoint replaced by the demo."""
    section = (REPO / "README.md").read_text().split("## Use it", 1)[1].split("\n## ", 1)[0]
    shell, python = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.DOTALL)[:2]
    shell, python = (block.replace("my_ps_resnet50.pth", str(DEMO_CHECKPOINT)).replace("my_resnet50.pth", PLAIN)
                     for block in (shell, python))
    commands = [shlex.split(line)[1:] for line in shell.splitlines() if line.startswith("psdeploy ")]
    return commands, python


def _manifest(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def test_readme_use_it_runs_as_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands, snippet = _use_it_blocks()
    assert [c[0] for c in commands] == ["inspect", "export", "compile", "export", "compile", "bench"]
    for args in commands:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"psdeploy {' '.join(args)}:\n{result.output}"
    manifest = _manifest(tmp_path / "ps50-ov")
    assert manifest["input_shape"] == [0, 3, 32, 32]  # the ONNX's dynamic batch kept
    assert {r["input"] for r in manifest["parity"]["cases"]} == {"1x3x32x32", "3x3x32x32"}  # checked at two batches
    assert "ps50-ov" in result.output and "resnet50-ov" in result.output

    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md (Use it)", "exec"), scope)  # noqa: S102 - the README's own text
    bench = scope["result"]
    assert sorted({(r.name, r.batch) for r in bench.rows}) == [("ps50-ov", 1), ("ps50-ov", 8), ("resnet50-ov", 1),
                                                                ("resnet50-ov", 8)]
    assert scope["artifact"].manifest.input_shape == [0, 3, 32, 32]
    assert scope["artifact"].parity.passed


@pytest.fixture(scope="module")
def plain_artifact(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("plain")
    onnx = api.export(PLAIN, work / "resnet50.onnx", dynamic_batch=True)
    return api.compile(str(onnx.path), target="openvino-cpu", output=work / "resnet50-ov").output


def test_verify_checks_a_dynamic_artifact_at_two_batches(plain_artifact) -> None:
    report = api.verify(plain_artifact, "seeded:resnet_digits")
    report.raise_if_failed()
    assert {c.input_shape[0] for c in report.cases} == {1, 3}
