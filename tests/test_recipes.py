"""Every shipped recipe parses; unknown keys and bad values are errors naming the key."""

from __future__ import annotations

import pytest

from psdeploy.api.recipes import load_recipe
from psdeploy.errors import PsdeployError
from tests.conftest import REPO

COMPILE_RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if p.parent.name != "reports")


@pytest.mark.parametrize("path", COMPILE_RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_shipped_recipes_parse(path) -> None:
    recipe = load_recipe(path)
    assert recipe.model.checkpoint and recipe.backend.target and recipe.output


def test_unknown_key(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {checkpoint: x}\nbackend: {target: llvm, turbo: true}\n")
    with pytest.raises(PsdeployError, match="unknown key 'backend.turbo'"):
        load_recipe(path)


@pytest.mark.parametrize("body, key", [
    ("model: {checkpoint: x, input_shape: [1, 3, 224]}\nbackend: {target: llvm}\n", "model.input_shape"),
    ("model: {checkpoint: x}\nbackend: {target: llvm}\ntuning: {trials: many}\n", "tuning.trials"),
    ("model: {checkpoint: x}\nbackend: {target: llvm}\ntuning: {trials: -5}\n", "tuning.trials"),
    ("model: {arch: resnet50}\nbackend: {target: llvm}\n", "model.checkpoint"),
    ("model: {checkpoint: x}\n", "backend"),
    ("model: {checkpoint: x}\nbackend: {target: llvm, precision: f8}\n", "backend.precision"),
    ("model: {checkpoint: x}\nbackend: {target: llvm}\ntolerance: '1e-4'\n", "tolerance"),
    ("- a list\n", "top level"),
])
def test_bad_values_name_the_key(tmp_path, body, key) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(PsdeployError, match=key.replace(".", r"\.")):
        load_recipe(path)


def test_cli_flags_override_recipe(tmp_path) -> None:
    from click.testing import CliRunner

    from psdeploy.cli import main

    out = tmp_path / "ov"
    result = CliRunner().invoke(main, ["compile", "--recipe", str(REPO / "recipes/demo/openvino-cpu.yaml"),
                                       "-o", str(out), "seeded:ps_resnet_digits"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").exists()
    assert '"source": "seeded:ps_resnet_digits"' in (out / "manifest.json").read_text()
