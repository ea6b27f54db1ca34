"""accuracy --data and --calibration on image files: the digits demo's PNGs in class folders, through the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_sample_image

from psdeploy import api
from psdeploy.arch.seeded import seeded_model
from psdeploy.backends import Manifest
from psdeploy.cli import main
from psdeploy.load import LoadedModel
from tests.conftest import DEMO_CHECKPOINT


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error_line(result) -> str:
    """The one error line a failure prints (after any progress lines), exit code 2."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and lines[-1] == errors[0], result.output
    return errors[0]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images") / "digits"
    assert _run("digits-images", "-o", folder).exit_code == 0
    return folder


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    api.export(str(DEMO_CHECKPOINT), path, dynamic_batch=True)
    return path


def test_folder_top1_equals_the_array_top1(digits, demo_onnx) -> None:
    arrays, _ = api.accuracy(demo_onnx, str(DEMO_CHECKPOINT))
    images = api.accuracy_on_images(demo_onnx, str(DEMO_CHECKPOINT), digits / "held-out", workers=0)
    assert images.images == arrays.samples == 450
    assert images.checkpoint_topk.top1 == arrays.reference_top1 and images.artifact_topk.top1 == arrays.candidate_top1
    assert images.agreement == 1.0 and images.checkpoint_topk.top5 >= images.checkpoint_topk.top1


def test_the_cli_prints_both_models_side_by_side_and_writes_json(digits, demo_onnx, tmp_path) -> None:
    out = tmp_path / "acc.json"
    result = _run("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data", digits / "held-out", "--limit", 50,
                  "--batch", 7, "--json", out)
    assert result.exit_code == 0, result.output
    assert "data: 50 images of 10 classes in" in result.output and "class-balanced sample of 50 of 450" in result.output
    assert "preprocessing: resize shorter side to 32 (bilinear), center crop 32x32, RGB" in result.output
    assert "checkpoint (torch)" in result.output and "onnxruntime" in result.output and "images/s" in result.output
    assert any(line.startswith("accuracy: images 50/50") for line in result.stderr.splitlines())
    record = json.loads(out.read_text())
    assert record["images"] == 50 and record["precision"] == "f32" and record["preprocess"]["resize"] == 32
    assert record["checkpoint"] == str(DEMO_CHECKPOINT) and record["disagreements"] == []
    assert 0.9 <= record["checkpoint_topk"]["top1"] <= record["checkpoint_topk"]["top5"] <= 1
    assert _run("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data", digits / "held-out",
                "--json", out).exit_code == 2  # an existing --json is refused, as every output


def test_a_static_batch_artifact_runs_in_its_own_batch(digits, tmp_path) -> None:
    static = api.export(str(DEMO_CHECKPOINT), tmp_path / "b1.onnx").path  # batch 1
    result = api.accuracy_on_images(static, str(DEMO_CHECKPOINT), digits / "held-out", limit=30, batch=8)
    assert result.images == 30 and result.agreement == 1.0


def test_image_options_need_data_and_the_crop_must_fit_the_model(digits, demo_onnx) -> None:
    line = _error_line(_run("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--limit", 5))
    assert line == "error: --limit: applies to a folder of images; give --data DIR"
    line = _error_line(_run("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data", digits / "held-out",
                            "--crop", 28))
    assert f"{demo_onnx}: takes 32x32 inputs, and the preprocessing crops 28x28" in line
    line = _error_line(_run("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data", digits / "held-out",
                            "--mean", "0.1,0.2"))
    assert "Invalid value for '--mean': '0.1,0.2': expected one number or three separated by commas" in line


def _class_copy(digits: Path, root: Path, per_class: int = 3) -> Path:
    """A small class-folder copy of the held-out PNGs."""
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for png in sorted((digits / "held-out" / str(label)).glob("*.png"))[:per_class]:
            (root / str(label) / png.name).write_bytes(png.read_bytes())
    return root


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, format="JPEG")
    return buffer.getvalue()[:20000]


@pytest.mark.parametrize(("content", "reason"), [
    (_truncated_jpeg(), "does not decode (image file is truncated"),
    (b"GIF89a? no, plain text", "not an image Pillow can read (unknown format or corrupt header)"),
    (b"", "empty file (0 bytes); expected an image"),
])
def test_a_bad_file_stops_the_run_in_one_line_or_is_skipped_and_counted(content, reason, digits, demo_onnx,
                                                                        tmp_path) -> None:
    root = _class_copy(digits, tmp_path / "data")
    bad = root / "4" / "broken.jpg"
    bad.write_bytes(content)
    out = tmp_path / "acc.json"
    args = ("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data", root, "--json", out)
    line = _error_line(_run(*args))
    assert line.startswith(f"error: {bad}: {reason}") and line.endswith("(--skip-bad skips such files, and counts them)")
    assert not out.exists()
    result = _run(*args, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad file (--skip-bad): 4/broken.jpg: " + reason in result.output
    record = json.loads(out.read_text())
    assert record["images"] == 30 and record["skipped"][0]["file"] == "4/broken.jpg"


def test_layout_errors_are_one_line_before_anything_runs(digits, demo_onnx, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ("accuracy", demo_onnx, "--against", DEMO_CHECKPOINT, "--data")
    assert _error_line(_run(*base, empty)) == (f"error: --data {empty}: no image files (jpg, jpeg, png, bmp, webp, tif, "
                                               f"tiff) in it or below it")
    root = _class_copy(digits, tmp_path / "data", 1)
    for png in (root / "7").iterdir():
        png.unlink()
    assert _error_line(_run(*base, root)) == (f"error: {root / '7'}: a class folder with no images (jpg, jpeg, png, "
                                              f"bmp, webp, tif, tiff) in it or below it")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(sorted((digits / "held-out" / "0").glob("*.png"))[0].read_bytes())
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png 0\nb.png 1\n")
    assert _error_line(_run(*base, flat, "--labels", labels)) == (f"error: --labels {labels} line 2: {flat / 'b.png'} "
                                                                  f"does not exist")
    labels.write_text("a.png 10\n")
    assert _error_line(_run(*base, flat, "--labels", labels)) == (f"error: --labels {labels} line 1: label 10 is "
                                                                  f"outside the model's 10 classes (0-9)")
    labels.write_text("a.png 0\n")
    result = _run(*base, flat, "--labels", labels)
    assert result.exit_code == 0 and "1 images of 1 classes" in result.output


def test_a_detector_backbone_is_compared_output_by_output(digits, tmp_path) -> None:
    backbone = seeded_model("ps_resnet_digits", num_classes=None)
    loaded = LoadedModel(backbone, backbone.cfg, "backbone", "0" * 64)
    onnx_path = api.export(loaded, tmp_path / "bb.onnx", dynamic_batch=True).path
    result = api.accuracy_on_images(onnx_path, loaded, digits / "held-out", limit=20, workers=0)
    assert result.checkpoint_topk is None and [o.name for o in result.outputs] == backbone.output_names
    assert all(o.mean_cosine > 0.99999 and o.max_rel_err < 1e-4 for o in result.outputs)


def test_int8_calibrated_on_image_files(digits, tmp_path) -> None:
    out = tmp_path / "int8"
    result = _run("compile", DEMO_CHECKPOINT, "--target", "onnxruntime-cpu", "--precision", "int8", "--calibration",
                  digits / "train", "--calibration-size", 90, "-o", out)
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out)
    assert manifest.calibration.calibrated_on == 90 and manifest.calibration.held_out == 30
    assert manifest.calibration.preprocess.startswith("resize shorter side to 32 (bilinear)")
    assert manifest.gate.samples == 30 and manifest.gate.data == str(digits / "train")
    accuracy = _run("accuracy", out, "--against", DEMO_CHECKPOINT, "--data", digits / "held-out")
    assert accuracy.exit_code == 0, accuracy.output  # int8 may differ on some images: reported, not an error
    assert "top-1 agreement" in accuracy.output
    size = _error_line(_run("compile", DEMO_CHECKPOINT, "--target", "onnxruntime-cpu", "--calibration-size", 90,
                            "-o", tmp_path / "x"))
    assert size == "error: --calibration-size 90: sizes the images of --calibration, which is not given"
    assert np.isfinite(manifest.gate.mean_cosine)
