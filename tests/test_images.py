"""Users' images, unit by unit: decoding and modes on real photographs, each preprocessing step against an
independent computation, the layouts, balanced samples, and calibration from image folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_image

from psdeploy.arch.registry import DIGITS_PREPROCESS, get_config
from psdeploy.calibration import read_calibration
from psdeploy.demo_data import INK_LEVELS, MEAN, PNG_STEP, STD, digits_images, digits_split
from psdeploy.errors import PsdeployError
from psdeploy.images.decode import BadImage, read_rgb
from psdeploy.images.digits import write_digits_images
from psdeploy.images.layouts import read_image_set
from psdeploy.images.loader import load_batches
from psdeploy.images.preprocess import IMAGENET, Preprocess, center_crop, resized_size

PHOTOS = ("china.jpg", "flower.jpg")  # 640x427 RGB JPEGs shipped inside scikit-learn


def _photo(name: str = "china.jpg") -> np.ndarray:
    return load_sample_image(name)  # uint8 H,W,3, decoded by scikit-learn's own loader


def _save(array: np.ndarray, path: Path, mode: str | None = None, **kwargs) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **kwargs)
    return path


@pytest.mark.parametrize("name", PHOTOS)
def test_a_photograph_decodes_to_its_pixels_over_255(name, tmp_path) -> None:
    path = _save(_photo(name), tmp_path / "photo.png")  # lossless: the pixels sklearn decoded
    rgb = read_rgb(path)
    assert rgb.dtype == np.float32 and rgb.shape == (427, 640, 3)
    np.testing.assert_array_equal(rgb, _photo(name).astype(np.float32) / 255)


def test_a_jpeg_decodes_as_scikit_learn_decodes_it() -> None:
    import sklearn

    path = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    np.testing.assert_array_equal(read_rgb(path), _photo().astype(np.float32) / 255)


def test_grayscale_is_replicated_to_three_channels_with_pillows_luma(tmp_path) -> None:
    rgb = _photo().astype(np.float64)
    luma = np.round(rgb @ np.array([299, 587, 114]) / 1000)  # ITU-R 601-2, as Pillow's "L" conversion documents
    got = read_rgb(_save(_photo(), tmp_path / "gray.png", "L")) * 255
    assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 0], got[..., 2])
    assert np.abs(got[..., 0] - luma).max() <= 1  # Pillow rounds in fixed point


def test_alpha_is_dropped_and_cmyk_and_palettes_are_mapped_to_rgb(tmp_path) -> None:
    photo = _photo()
    rgba = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(read_rgb(_save(rgba, tmp_path / "a.png")) * 255, photo)
    # Pillow's CMYK is C = 255 - R etc. with K = 0, so a CMYK TIFF of the photo comes back exactly
    np.testing.assert_array_equal(read_rgb(_save(photo, tmp_path / "c.tif", "CMYK")) * 255, photo)
    paletted = Image.fromarray(photo).quantize(64)
    paletted.save(tmp_path / "p.png")
    lookup = np.asarray(paletted.getpalette(), np.uint8).reshape(-1, 3)[np.asarray(paletted)]
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png") * 255, lookup)


def test_sixteen_bit_grayscale_is_read_at_its_full_range(tmp_path) -> None:
    gray = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = read_rgb(tmp_path / "g16.png")
    np.testing.assert_allclose(got[..., 1], gray / 65535, rtol=1e-6)


def test_the_exif_orientation_is_applied(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(_photo()).save(tmp_path / "r.jpg", exif=exif, quality=95)
    stored = np.asarray(Image.open(tmp_path / "r.jpg").convert("RGB"), np.float32) / 255  # as the file holds it
    got = read_rgb(tmp_path / "r.jpg")
    assert got.shape == (640, 427, 3)
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))


def test_resizing_matches_torch_antialiased_interpolation() -> None:
    rgb = _photo().astype(np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    for shorter in (256, 100, 700):  # down, far down, up
        h, w = resized_size(427, 640, shorter)
        got = Preprocess(resize=shorter, crop=None, mean=(0, 0, 0), std=(1, 1, 1)).apply(rgb)
        want = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4, shorter


def test_the_resized_size_truncates_the_longer_side_as_torchvision_does() -> None:
    assert resized_size(427, 640, 256) == (256, 383)  # 256 * 640 / 427 = 383.7
    assert resized_size(640, 427, 256) == (383, 256)
    assert resized_size(8, 8, 32) == (32, 32)


def test_center_crop_rounds_offsets_and_pads_like_torchvision() -> None:
    image = np.arange(256 * 383 * 3, dtype=np.float32).reshape(256, 383, 3)
    np.testing.assert_array_equal(center_crop(image, 224), image[16:240, 80:304])  # left = round(79.5) = 80
    small = np.ones((3, 4, 3), np.float32)
    padded = center_crop(small, 6)
    assert padded.shape == (6, 6, 3) and padded.sum() == small.sum()
    np.testing.assert_array_equal(padded[1:4, 1:5], small)  # top (6-3)//2 = 1, left (6-4)//2 = 1


def test_the_imagenet_recipe_end_to_end_against_torch() -> None:
    rgb = _photo("flower.jpg").astype(np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    resized = F.interpolate(x, size=(256, 383), mode="bilinear", antialias=True, align_corners=False)[0]
    cropped = resized[:, 16:240, 80:304]
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    want = ((cropped - mean) / std).numpy()
    got = IMAGENET.apply(rgb)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3  # resampling differences, divided by std ~0.22
    bgr = IMAGENET.model_copy(update={"channel_order": "bgr"}).apply(rgb)
    np.testing.assert_array_equal(bgr, got[::-1])


def test_overrides_replace_only_the_steps_given() -> None:
    changed = IMAGENET.with_overrides(resize=320, crop=288)
    assert (changed.resize, changed.crop, changed.mean, changed.interpolation) == (320, 288, IMAGENET.mean, "bilinear")
    assert "resize shorter side to 320 (bilinear), center crop 288x288, RGB" in changed.describe()


def test_the_digits_recipe_is_the_demo_arrays_normalisation() -> None:
    """The card's numbers are the demo's MEAN/STD in x/255 units of grey 15v for ink v (registry may not import them)."""
    scale = INK_LEVELS * PNG_STEP / 255
    assert DIGITS_PREPROCESS.mean == (MEAN * scale,) * 3 and DIGITS_PREPROCESS.std == (STD * scale,) * 3
    assert get_config("ps_resnet_digits").preprocess == DIGITS_PREPROCESS


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits") / "digits"
    assert write_digits_images(folder) == {"train": 1347, "held-out": 450}
    return folder


def test_the_digits_pngs_through_the_card_are_the_demo_arrays(digits_folder) -> None:
    images = read_image_set(digits_folder / "held-out", num_classes=10)
    _, _, _, held_out = digits_images()
    _, _, x_test, y_test = digits_split()
    row = {int(index): k for k, index in enumerate(held_out)}
    got, order = [], []
    for batch in load_batches(images.files, DIGITS_PREPROCESS, 64, workers=0, size=(32, 32)):
        got.append(batch.x)
        order += [row[int(images.files[i].stem)] for i in batch.indices]
    assert len(order) == 450
    np.testing.assert_allclose(np.concatenate(got), x_test[order], atol=1e-5)
    np.testing.assert_array_equal(images.labels, y_test[order])


def test_the_thread_pool_gives_the_batches_in_order_and_stops_cleanly(digits_folder) -> None:
    """Decoded on threads, the batches are those decoded in this thread, in order; a consumer that stops early
    leaves no decoding thread behind, and no signal handler is installed (worker processes left torch's)."""
    import signal
    import threading

    files = read_image_set(digits_folder / "held-out", num_classes=10).files[:100]
    serial = list(load_batches(files, DIGITS_PREPROCESS, 16, workers=0))
    pooled = list(load_batches(files, DIGITS_PREPROCESS, 16, workers=3))
    assert [b.indices for b in pooled] == [b.indices for b in serial] == [list(range(i, min(i + 16, 100)))
                                                                           for i in range(0, 100, 16)]
    assert all(np.array_equal(a.x, b.x) for a, b in zip(pooled, serial))
    stream = load_batches(files, DIGITS_PREPROCESS, 8, workers=2)
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("psdeploy-images")]
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL


def _tree(root: Path, layout: dict[str, int], ext: str = ".png") -> Path:
    for name, count in layout.items():
        for i in range(count):
            path = root / name / f"{i}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (i, i, i)).save(path, format="PNG")
    return root


def test_class_folders_are_indexed_by_sorted_name_or_by_the_classes_file(tmp_path) -> None:
    root = _tree(tmp_path / "d", {"b": 2, "a": 1, "c/deeper/still": 3}, ".PnG")
    images = read_image_set(root, num_classes=3)
    assert [images.name(i) for i in range(len(images.files))] == [
        "a/0.PnG", "b/0.PnG", "b/1.PnG", "c/deeper/still/0.PnG", "c/deeper/still/1.PnG", "c/deeper/still/2.PnG"]
    assert images.labels.tolist() == [0, 1, 1, 2, 2, 2] and images.classes == ("a", "b", "c")
    (tmp_path / "classes.txt").write_text("c\nx\na\nb\n")
    ordered = read_image_set(root, classes=tmp_path / "classes.txt", num_classes=4)
    assert ordered.labels.tolist() == [2, 3, 3, 0, 0, 0]


def test_a_label_file_names_flat_files(tmp_path) -> None:
    root = _tree(tmp_path / "val", {"": 4}, ".JPEG")
    (tmp_path / "val" / "extra.jpg").write_bytes((root / "0.JPEG").read_bytes())
    (tmp_path / "labels.txt").write_text("# ImageNet-val style\n0.JPEG 7\n1.JPEG 3\n\n2.JPEG 7\n3.JPEG dog\n")
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(9)) + "\ndog\n")
    images = read_image_set(root, labels=tmp_path / "labels.txt", classes=tmp_path / "classes.txt", num_classes=10)
    assert images.labels.tolist() == [7, 3, 7, 9] and images.unlisted == 1
    assert "4 images of 3 classes" in images.describe() and "1 more images there are not in the label file" in images.describe()


def test_a_limit_draws_a_seeded_class_balanced_sample(tmp_path) -> None:
    images = read_image_set(_tree(tmp_path / "d", {"a": 30, "b": 5, "c": 30}), num_classes=3)
    sample = images.balanced(40, seed=0)
    assert np.bincount(sample.labels).tolist() == [18, 5, 17] or np.bincount(sample.labels).tolist() == [17, 5, 18]
    assert sample.files == images.balanced(40, seed=0).files and sample.files != images.balanced(40, seed=1).files
    head, rest = sample.split(10)
    assert len(head.files) == 10 and not set(head.files) & set(rest.files) and len(rest.files) == 30
    assert sorted(np.bincount(head.labels).tolist()) == [3, 3, 4]


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: root.mkdir(), "no image files (jpg, jpeg, png, bmp, webp, tif, tiff) in it or below it"),
    (lambda root: (_tree(root, {"a": 1, "b": 1}), (root / "c" / "notes").mkdir(parents=True)),
     "/c: a class folder with no images"),
    (lambda root: _tree(root, {"": 2}), "images but no class folders; expected one folder per class, or --labels"),
    (lambda root: _tree(root, {"a": 1, "b": 1}), "2 class folders; the model has 3 classes (give --classes FILE"),
    (lambda root: (_tree(root, {"a": 1, "b": 1, "c": 1}), _tree(root, {"": 1})),
     "1 image files (0.png) beside the class folders"),
])
def test_folders_laid_out_wrong_are_refused_in_one_line(make, message, tmp_path) -> None:
    root = tmp_path / "data"
    make(root)
    with pytest.raises(PsdeployError, match=re_escape(message)):
        read_image_set(root, num_classes=3)


@pytest.mark.parametrize(("labels", "message"), [
    ("0.png 1\nmissing.png 2\n", "line 2: {root}/missing.png does not exist"),
    ("0.png 1\n1.png 10\n", "line 2: label 10 is outside the model's 10 classes (0-9)"),
    ("0.png 1\n1.png -1\n", "line 2: label -1 is outside the model's 10 classes (0-9)"),
    ("0.png\n", "line 1: '0.png'; expected 'filename label'"),
    ("0.png cat\n", "line 1: label 'cat' is neither a class index nor a name from --classes"),
    ("0.png 1\n0.png 2\n", "line 2: 0.png is listed a second time"),
])
def test_bad_label_files_are_refused_in_one_line(labels, message, tmp_path) -> None:
    root = _tree(tmp_path / "val", {"": 2})
    (tmp_path / "labels.txt").write_text(labels)
    with pytest.raises(PsdeployError, match=re_escape(f"--labels {tmp_path / 'labels.txt'} " + message.format(root=root))):
        read_image_set(root, labels=tmp_path / "labels.txt", num_classes=10)


def test_bad_files_are_named_with_what_is_wrong(tmp_path) -> None:
    jpeg = io.BytesIO()
    Image.fromarray(_photo()).save(jpeg, format="JPEG")
    cases = {"truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "text.jpg": b"not an image at all",
             "empty.png": b""}
    reasons = {"truncated.jpg": "does not decode (image file is truncated", "text.jpg": "not an image Pillow can read",
               "empty.png": "empty file (0 bytes); expected an image"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BadImage, match=re_escape(f"{tmp_path / name}: {reasons[name]}")):
            read_rgb(tmp_path / name)


def test_calibration_from_an_image_folder_is_balanced_and_held_out_apart(digits_folder) -> None:
    data = read_calibration(digits_folder / "train", preprocess=DIGITS_PREPROCESS, size=60)
    assert data.calibrate.shape == (60, 3, 32, 32) and data.held_out.shape == (20, 3, 32, 32)
    assert data.preprocess == DIGITS_PREPROCESS.describe() and data.source == str(digits_folder / "train")
    x_train = digits_split()[0].reshape(1347, -1)
    nearest = []  # each sample is a training image: its nearest training array, at float precision
    for sample in np.concatenate([data.calibrate, data.held_out]).reshape(80, -1):
        distances = np.abs(x_train - sample).max(axis=1)
        assert distances.min() < 1e-5
        nearest.append(int(distances.argmin()))
    assert len(set(nearest)) == 80  # no image twice, so calibration and held-out share none


def test_calibration_images_need_the_preprocessing_and_decodable_files(tmp_path) -> None:
    root = _tree(tmp_path / "calib", {"": 30})
    with pytest.raises(PsdeployError, match="a folder of images, read through the model's preprocessing"):
        read_calibration(root)
    (root / "15.png").write_bytes(b"")
    recipe = Preprocess(resize=None, crop=4, mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(PsdeployError, match=re_escape(f"--calibration {root / '15.png'}: empty file (0 bytes)")):
        read_calibration(root, preprocess=recipe, size=15)
    data = read_calibration(root, preprocess=recipe, size=15, skip_bad=True)
    assert data.skipped == (("15.png", "empty file (0 bytes); expected an image"),)
    assert len(data.calibrate) + len(data.held_out) == 19


def re_escape(text: str) -> str:
    import re

    return re.escape(text)
