"""TVM conv layouts: NCHW as measured by default, NHWC on request, exact for every lowering, the weights'
transposes folded at build time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.backends import BuildOptions, parse_target
from psdeploy.backends.tvm.layout import resolve_layout
from psdeploy.cli import main
from psdeploy.errors import PsdeployError
from psdeploy.export import export_onnx
from psdeploy.load import load_model
from psdeploy.report.config import ReportConfig, platform

pytest.importorskip("tvm")

ODD_SHAPE = (1, 3, 29, 35)  # odd and unequal sides: stride-2 blocks round down, H and W cannot be confused


@pytest.fixture(scope="module")
def digits():
    return load_model("seeded:ps_resnet_digits@4", None)


def _lowered(digits, tmp_path: Path, lowering: str, layout: str):
    from psdeploy.backends.tvm.build import import_onnx, lower

    path = tmp_path / f"{lowering}.onnx"
    export_onnx(digits, path, lowering)
    return lower(import_onnx(path, ODD_SHAPE), parse_target("llvm"), 0, layout)


def _calls(mod):
    """(callee name, args) of every call_tir in main."""
    from tvm import relax

    calls = []

    @relax.expr_functor.visitor
    class Calls(relax.PyExprVisitor):
        def visit_call_(self, call) -> None:
            if getattr(call.op, "name", "") == "relax.call_tir":
                calls.append((call.args[0].name_hint, list(call.args[1].fields)))
            super().visit_call_(call)

    Calls().visit_expr(mod["main"])
    return calls


def test_defaults_per_target_and_winograd() -> None:
    assert resolve_layout(None, "cpu", 0) == "nchw" and resolve_layout(None, "cuda", 0) == "nchw"
    assert resolve_layout("nhwc", "cpu", 0) == "nhwc" and resolve_layout("nhwc", "cuda", 0) == "nhwc"
    assert resolve_layout(None, "cpu", 4) == "nchw" and resolve_layout("nchw", "cpu", 0) == "nchw"
    with pytest.raises(PsdeployError, match="--layout nhwc: Winograd convs are built in NCHW"):
        resolve_layout("nhwc", "cpu", 2)


@pytest.mark.parametrize("lowering", ["grouped", "sliced", "aligned"])
def test_nhwc_moves_every_conv_and_folds_the_weight_transposes(digits, tmp_path, lowering) -> None:
    from tvm.ir.expr import Constant

    nchw, nhwc = (_lowered(digits, tmp_path, lowering, layout) for layout in ("nchw", "nhwc"))

    def kernel_shapes(mod) -> list[tuple[int, ...]]:  # the (folded, constant) weight of every conv
        return [tuple(args[1].value.shape) for n, args in _calls(mod) if "conv2d" in n]

    before, after = kernel_shapes(nchw), kernel_shapes(nhwc)
    assert len(before) == len(after) > 0 and before != after
    assert all(o == o2 and (h, w, i) == (h2, w2, i2) for (o, i, h, w), (o2, h2, w2, i2) in zip(before, after))
    transposes = [(n, args) for n, args in _calls(nhwc) if "transpose" in n]
    assert transposes, "the input and output change layout"
    assert not any(isinstance(a, Constant) for _, args in transposes for a in args), \
        "a weight transpose was left to run at inference"
    assert not any("transpose" in n for n, _ in _calls(nchw))


@pytest.mark.parametrize("lowering", ["grouped", "sliced", "aligned", "fused"])
def test_every_lowering_is_exact_in_nhwc(digits, tmp_path, lowering) -> None:
    result = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "a", lowering=lowering,
                         layout="nhwc", input_shape=",".join(map(str, ODD_SHAPE)), tuning_db=tmp_path / "db")
    assert result.manifest.layout == "nhwc" and result.ran and result.parity.passed


def test_nchw_by_default_and_with_winograd_recorded(tmp_path) -> None:
    plain = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "n",
                        input_shape=",".join(map(str, ODD_SHAPE)), tuning_db=tmp_path / "db")
    assert plain.manifest.layout == "nchw" and plain.parity.passed
    wino = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "w", winograd="f2",
                       tuning_db=tmp_path / "db")
    assert wino.manifest.layout == "nchw" and wino.parity.passed


def test_bad_layouts_are_one_line_and_write_nothing(tmp_path) -> None:
    runner = CliRunner()
    cases = [(["--target", "llvm", "--winograd", "f4", "--layout", "nhwc"], "--layout nhwc: Winograd"),
             (["--target", "onnxruntime-cpu", "--layout", "nhwc"], "--layout nhwc: not an option of onnxruntime-cpu"),
             (["--target", "llvm", "--layout", "nhcw"], "'nhcw' is not one of")]
    for flags, message in cases:
        out = tmp_path / "out"
        result = runner.invoke(main, ["compile", "seeded:ps_resnet_digits@4", *flags, "-o", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    with pytest.raises(PsdeployError, match="--layout 'NHWC': expected one of nchw, nhwc"):
        BuildOptions(layout="NHWC")


def test_recipe_and_report_names_carry_the_layout(tmp_path, monkeypatch) -> None:
    config = ReportConfig(name="t", threads=2, backends=[])
    assert platform("tvm-llvm-nhwc", config).options.layout == "nhwc"
    assert platform("tvm-llvm-nchw", config).options.layout == "nchw"
    assert platform("tvm-llvm", config).options.layout is None
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {checkpoint: 'seeded:ps_resnet_digits@4'}\n"
                      "backend: {target: llvm, layout: nchw}\noutput: " + str(tmp_path / "out") + "\n")
    seen = []
    monkeypatch.setattr(sys.modules["psdeploy.api"], "compile_model", lambda request: seen.append(request.options))
    api.compile(recipe=recipe, tuning_db=tmp_path / "db")
    api.compile(recipe=recipe, layout="nhwc", tuning_db=tmp_path / "db")
    assert [o.layout for o in seen] == ["nchw", "nhwc"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("layout: nchw", "layout: NCHW"))
    with pytest.raises(PsdeployError, match="layout"):
        api.compile(recipe=bad)
