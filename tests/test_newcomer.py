"""What a newcomer meets: one-line refusals, progress in logs, and outputs that say what they are."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from psdeploy.cli import main
from tests.conftest import DEMO_CHECKPOINT, REPO

PLAIN = "seeded:resnet_digits"  # a 10-class digits network: exported at 48x48 below, the demo data does not fit it


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_line_error(result) -> str:
    """The one line a failure prints, with exit code 2."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def at_48(tmp_path_factory):
    """The plain digits network exported at 48x48 (dynamic batch), and an onnxruntime artifact of it."""
    work = tmp_path_factory.mktemp("at48")
    onnx_path, artifact = work / "r48.onnx", work / "r48-ort"
    exported = _run("export", PLAIN, "-o", str(onnx_path), "--input-shape", "1,3,48,48", "--dynamic-batch")
    assert exported.exit_code == 0, exported.output
    compiled = _run("compile", str(onnx_path), "--target", "onnxruntime-cpu", "-o", str(artifact))
    assert compiled.exit_code == 0, compiled.output
    return onnx_path, artifact


def test_every_command_ends_in_one_line_on_a_model_the_demo_data_does_not_fit(at_48, tmp_path) -> None:
    onnx_path, artifact = at_48
    commands = [
        ("inspect", PLAIN),
        ("export", PLAIN, "-o", str(tmp_path / "again.onnx"), "--input-shape", "1,3,48,48"),
        ("compile", str(onnx_path), "--target", "onnxruntime-cpu", "-o", str(tmp_path / "again-ort")),
        ("run", str(artifact)),
        ("verify", str(artifact), "--against", PLAIN),
        ("accuracy", str(onnx_path), "--against", PLAIN),
        ("accuracy", str(artifact), "--against", PLAIN),
        ("bench", str(onnx_path), "--iters", "30", "--warmup", "2", "--loads", "1", "--threads", "1"),
        ("profile", str(onnx_path), "--runs", "2", "--threads", "1"),
    ]
    for args in commands:
        result = _run(*args)
        assert result.exit_code in (0, 2), (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        assert "Traceback" not in result.output, (args, result.output)
        if args[0] == "accuracy":
            line = _one_line_error(result)
            assert f"{args[1]}: takes 3x48x48 inputs; accuracy measures" in line and "3x32x32 images, 10 classes" in line
        else:
            assert result.exit_code == 0, (args, result.output)


def test_accuracy_names_classes_and_backbones_it_cannot_measure(at_48, tmp_path) -> None:
    from psdeploy import api
    from psdeploy.arch.seeded import seeded_model
    from psdeploy.errors import PsdeployError
    from psdeploy.load import LoadedModel

    onnx_path, _ = at_48
    for classes, said in ((100, "its checkpoint digits-100 (resnet_digits) has 100 classes"),
                          (None, "its checkpoint digits-None (resnet_digits) is a backbone (feature maps, no class")):
        model = seeded_model("resnet_digits", num_classes=classes)
        loaded = LoadedModel(model, model.cfg, f"digits-{classes}", "0" * 64)
        with pytest.raises(PsdeployError, match=re.escape(said)) as error:
            api.accuracy(onnx_path, loaded)
        assert "takes 3x48x48 inputs" in str(error.value)
    # a 10-class checkpoint beside an artifact of a backbone: refused from what the artifact puts out
    backbone = seeded_model("resnet_digits", num_classes=None)
    path = api.export(LoadedModel(backbone, backbone.cfg, "backbone", "0" * 64), tmp_path / "bb.onnx").path
    with pytest.raises(PsdeployError, match=r"bb.onnx: its first output holds \d+x\d+x\d+ values per sample, not the "
                                            r"10 class scores"):
        api.accuracy(path, PLAIN)


def test_bench_off_a_terminal_prints_complete_progress_lines(at_48) -> None:
    onnx_path, _ = at_48
    result = CliRunner().invoke(main, ["bench", str(onnx_path), "--batch", "1,2", "--iters", "30", "--warmup", "2",
                                       "--loads", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("bench:")]
    assert lines and all(re.fullmatch(r"bench: load [12]/2, batch [12], rounds \d+/60 \(\d+ s\)", line)
                         for line in lines), lines
    seen = {re.match(r"bench: (load \d/2, batch \d)", line).group(1) for line in lines}
    assert seen == {f"load {k}/2, batch {b}" for b in (1, 2) for k in (1, 2)}  # each load times every batch
    assert lines[-1].startswith("bench: load 2/2, batch 2, rounds 60/60") and "…" not in result.stderr


def test_progress_lines_are_whole_and_spaced() -> None:
    from psdeploy.progress import Progress

    out = io.StringIO()
    console = Console(file=out, width=40)  # not a terminal, and narrow: nothing may be cut to its width
    detail = "last fused_nn_conv2d_add_nn_relu_with_a_very_long_task_name_7"
    with Progress("tuning", 512, "trials", console=console, every_s=3600) as progress:
        progress.update(16, stage="searching", detail=detail)
        progress.update(32)  # same stage, too soon: no line
        progress.update(48, stage="measuring")
        progress.update(512)
    lines = out.getvalue().splitlines()
    assert [re.sub(r" \(\d+ s\)$", "", line) for line in lines] == [
        f"tuning: searching, trials 16/512, {detail}", f"tuning: measuring, trials 48/512, {detail}",
        f"tuning: measuring, trials 512/512, {detail}"]


def test_threads_beyond_the_cpus_are_warned_and_runs_on_says_threads(at_48) -> None:
    onnx_path, _ = at_48
    too_many = (os.cpu_count() or 1) + 1
    result = CliRunner().invoke(main, ["run", str(onnx_path), "--threads", str(too_many)])
    assert result.exit_code == 0, result.output
    assert f"warning: --threads {too_many} is more than the {os.cpu_count()} CPUs here" in result.stderr
    from psdeploy.backends import open_runner

    assert open_runner(onnx_path, threads=1).description == "onnxruntime (1 thread)"
    assert re.fullmatch(r"onnxruntime \(\d+ threads?\)", open_runner(onnx_path).description)


def test_compile_given_an_artifact_says_what_it_takes(at_48, tmp_path) -> None:
    _, artifact = at_48
    line = _one_line_error(_run("compile", str(artifact), "--target", "onnxruntime-cpu", "-o", str(tmp_path / "y")))
    assert "a compiled artifact (a directory with manifest.json)" in line
    assert "expected a checkpoint file (.pth), seeded:ARCH, or an ONNX file that 'psdeploy export' wrote" in line
    assert "a compiled artifact" in _one_line_error(_run("inspect", str(artifact)))


def test_run_labels_the_top5_of_every_sample(at_48, tmp_path) -> None:
    onnx_path, _ = at_48
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((4, 3, 48, 48)).astype(np.float32))
    result = _run("run", str(onnx_path), "--input", str(x))
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0].strip() for line in result.output.splitlines() if "sample" in line] == [
        f"sample {n} of 4" for n in range(4)]


def test_manifest_of_an_onnx_compile_names_the_checkpoint_and_the_onnx(at_48, tmp_path) -> None:
    from psdeploy.backends import Manifest

    onnx_path, artifact = at_48
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["source"] == PLAIN and manifest["onnx"] == str(onnx_path)
    old = tmp_path / "old"
    old.mkdir()
    del manifest["onnx"]
    manifest["source"] = str(onnx_path)  # as manifests were written before 'onnx' was kept
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Manifest.read(old).onnx is None


def test_inspect_names_layers_as_exports_and_profiles_do(tmp_path) -> None:
    from psdeploy import api

    result = _run("inspect", "seeded:ps_resnet_digits")
    assert result.exit_code == 0, result.output
    assert "layer1.0.conv2" in result.output and "stages.0.0.conv2" in result.output
    deployed = {layer.deployed_name for layer in api.inspect("seeded:ps_resnet_digits").layers}
    onnx_path = api.export("seeded:ps_resnet_digits", tmp_path / "ps.onnx").path
    profiled = {row.name for row in api.profile(onnx_path, runs=1, threads=1).by_layer()}
    assert len(deployed) == 6 and deployed <= profiled


def test_usage_errors_share_the_prefix_and_verbose_goes_either_side() -> None:
    from psdeploy.quiet import is_verbose, set_verbose

    assert re.match(r"error: \S+: No such option '--no-such-flag'", _one_line_error(_run("--no-such-flag")))
    assert re.match(r"error: \S+: No such command 'no-such-command'", _one_line_error(_run("no-such-command")))
    try:
        assert "no such checkpoint file" in _one_line_error(_run("inspect", "-v", "missing.pth"))
        assert is_verbose()
        assert _run("inspect", str(DEMO_CHECKPOINT)).exit_code == 0 and not is_verbose()  # each run starts quiet
        assert _run("-v", "inspect", str(DEMO_CHECKPOINT)).exit_code == 0 and is_verbose()
    finally:
        set_verbose(False)


def test_missing_files_and_bad_arguments_are_told_before_the_pipeline_is_imported() -> None:
    probe = ("import sys; from click.testing import CliRunner; from psdeploy.cli import main\n"
             "for args in (['inspect', 'missing.pth'], ['export', 'missing.pth', '-o', 'x.onnx'],\n"
             "             ['accuracy', 'missing.onnx', '--against', 'x.pth'], ['bench', 'x.onnx', '--iters', '5'],\n"
             "             ['compile', 'missing.onnx', '--target', 'llvm', '-o', 'y']):\n"
             "    assert CliRunner().invoke(main, args).exit_code == 2, args\n"
             "heavy = ('torch', 'onnx', 'onnxruntime', 'openvino', 'tvm', 'numpy')\n"
             "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_ps_resnet_built_with_psdeploys_modules_is_masked(tmp_path) -> None:
    from psdeploy.arch.psconv import PSGConv2d, released_init_mask
    from psdeploy.arch.registry import build, get_config

    torch.manual_seed(0)
    model = build(get_config("ps_resnet_digits")).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()  # the mask holds through training: its gradient is zero
    layers = [m for m in model.modules() if isinstance(m, PSGConv2d)]
    assert all(not m.conv.weight.grad[released_init_mask(m)].any() for m in layers)
    path = tmp_path / "fresh.pth"
    torch.save(model.state_dict(), path)
    result = _run("inspect", str(path))
    assert result.exit_code == 0, result.output
    assert "6/6 layers clean" in result.output
    with torch.no_grad():  # the same network trained without the mask: said for a PS-ResNet, not as ResNeXt's bug
        for m in layers:
            m.conv.weight.add_(0.01)
    torch.save(model.state_dict(), path)
    result = _run("inspect", str(path))
    assert "0/6 layers clean" in result.output and "checkpoint was trained without that mask" in result.output
    assert "i + j * groups" not in result.output


def test_the_ps_resnext_note_names_its_mask_bug() -> None:
    from psdeploy.cli.render import _unmasked

    assert "PS-ResNeXt's released PSGConv2d" in _unmasked(True) and "(i + j * groups)" in _unmasked(True)
    assert "PS-ResNeXt" not in _unmasked(False)
