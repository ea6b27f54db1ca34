"""Single-key mutations of real state dicts: the loader succeeds or raises one clear line, never anything else.

Every key of the demo checkpoint, and a seeded sample of keys of full-size
PS-ResNet-50 / PS-ResNeXt-101 state dicts, is deleted, renamed, reshaped, cast
and poisoned with NaN/Inf; each mutated dict is written with ``torch.save`` and
loaded through ``load_model`` like a user's file.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from psdeploy.arch.registry import get_config
from psdeploy.arch.resnet import ResNet
from psdeploy.arch.seeded import seeded_model
from psdeploy.errors import PsdeployError
from psdeploy.load import load_model
from tests.conftest import DEMO_CHECKPOINT

REQUIRED = ("layer1.0.conv2.conv.weight", "conv1.weight", "fc.weight", "fc.bias")
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}
BIG_ARCHS = ("ps_resnet50", "ps_resnext101_32x4d")
SAMPLE = 15


def _demo_state_dict() -> dict[str, torch.Tensor]:
    obj = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    return dict(obj.get("state_dict", obj))  # the demo file wraps its state dict beside a "meta" entry


def _keys_of(arch: str) -> list[str]:
    with torch.device("meta"):
        return list(ResNet(get_config(arch)).state_dict())


def _big_sample(arch: str) -> list[str]:
    """~15 keys: the four that matter most, then a seeded draw of weights and BN statistics.

    BN step counters are left to the demo model, where every one of them is mutated:
    most of their mutations load, and a full-size load is the slow path.
    """
    keys = [k for k in _keys_of(arch) if not k.endswith("num_batches_tracked") and k not in REQUIRED]
    return list(REQUIRED) + sorted(random.Random(f"mutations-{arch}").sample(keys, SAMPLE - len(REQUIRED)))


DEMO_KEYS = list(_demo_state_dict())
BIG_CASES = [(arch, key) for arch in BIG_ARCHS for key in _big_sample(arch)]


@pytest.fixture(scope="module", autouse=True)
def _fast_saves():
    """Skip torch.save's CRC32 of every record (a hundred 100-180 MB files are written below), and run
    torch single-threaded: on a small shared machine, waking a second thread for each small
    reduction costs more than the reduction."""
    crc, threads = torch.serialization.get_crc32_options(), torch.get_num_threads()
    torch.serialization.set_crc32_options(False)
    torch.set_num_threads(1)
    yield
    torch.serialization.set_crc32_options(crc)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_sd() -> dict[str, torch.Tensor]:
    return _demo_state_dict()


@pytest.fixture(scope="session")
def big_sd():
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(arch: str) -> dict[str, torch.Tensor]:
        if arch not in cache:
            cache[arch] = seeded_model(arch).state_dict()
        return cache[arch]

    return get


def _poisoned(value: torch.Tensor, bad: float) -> torch.Tensor:
    out = value.to(torch.float32 if not value.is_floating_point() else value.dtype).clone()
    out.view(-1)[out.numel() // 2] = bad
    return out


def _drop_row(value: torch.Tensor) -> torch.Tensor:
    return value[:-1].clone() if value.dim() >= 1 and value.shape[0] > 1 else value.reshape(1, 1).clone()


# mutation name -> (state dict, key) -> (mutated state dict, expectation)
# expectation: "error" (names the key), ("error", other key also named), "loads", or ("half", dtype name).
def _mutations(key: str) -> dict[str, object]:
    counter = key.endswith("num_batches_tracked")

    def replaced(sd, value):
        return {**sd, key: value}

    return {
        "deleted": lambda sd: ({k: v for k, v in sd.items() if k != key}, "loads" if counter else "error"),
        "renamed": lambda sd: ({(f"{k}_x" if k == key else k): v for k, v in sd.items()}, ("error", f"{key}_x")),
        "extra-dim": lambda sd: (replaced(sd, sd[key].unsqueeze(-1).clone()), "error"),
        "row-dropped": lambda sd: (replaced(sd, _drop_row(sd[key])), "error"),
        "float16": lambda sd: (replaced(sd, sd[key].to(torch.float16)), "loads" if counter else ("half", "float16")),
        "bfloat16": lambda sd: (replaced(sd, sd[key].to(torch.bfloat16)),
                                "loads" if counter else ("half", "bfloat16")),
        "int64": lambda sd: (replaced(sd, sd[key].to(torch.int64)), "loads" if counter else "error"),
        "bool": lambda sd: (replaced(sd, sd[key] != 0), "error"),
        "nan": lambda sd: (replaced(sd, _poisoned(sd[key], float("nan"))), "error"),
        "inf": lambda sd: (replaced(sd, _poisoned(sd[key], float("-inf"))), "error"),
    }


def _check(tmp_path: Path, sd: dict[str, torch.Tensor], key: str, name: str) -> None:
    mutated, expectation = _mutations(key)[name](sd)
    path = tmp_path / f"{name}.pth"
    torch.save(mutated, path)
    where = f"{key} {name}"
    try:
        try:
            loaded = load_model(path)
        except PsdeployError as exc:
            message = str(exc)
            expects_error = expectation == "error" or (isinstance(expectation, tuple) and expectation[0] == "error")
            assert expects_error, f"{where}: expected a successful load, got: {message}"
            assert "\n" not in message, f"{where}: message is not one line: {message!r}"
            assert str(path) in message, f"{where}: message does not name the file: {message}"
            assert key in message, f"{where}: message does not name the key: {message}"
            if isinstance(expectation, tuple):
                assert expectation[1] in message, f"{where}: message does not name {expectation[1]}: {message}"
            if name in ("int64", "bool"):
                assert "dtype" in message, f"{where}: message does not say the dtype is wrong: {message}"
            if name in ("nan", "inf"):
                assert "non-finite" in message, f"{where}: message does not say non-finite: {message}"
            return
        except Exception as exc:  # anything but PsdeployError is a crash
            raise AssertionError(f"{where}: {type(exc).__name__} escaped the loader: {exc}") from exc
        assert expectation == "loads" or (isinstance(expectation, tuple) and expectation[0] == "half"), (
            f"{where}: loaded although an error naming {key} was expected")
        if isinstance(expectation, tuple):
            dtype_name = expectation[1]
            assert any(dtype_name in note and "float32" in note for note in loaded.notes), (where, loaded.notes)
            got = loaded.model.state_dict()[key]
            assert got.dtype == torch.float32
            assert torch.equal(got, sd[key].to(HALF[dtype_name]).to(torch.float32)), where
    finally:
        path.unlink(missing_ok=True)  # full-size files are 100-180 MB each


@pytest.mark.parametrize("key", DEMO_KEYS)
def test_every_key_of_the_demo_checkpoint(tmp_path, demo_sd, key) -> None:
    for name in _mutations(key):
        _check(tmp_path, demo_sd, key, name)


@pytest.mark.parametrize("arch, key", BIG_CASES)
def test_sampled_keys_of_full_size_models(tmp_path, big_sd, arch, key) -> None:
    """Failing mutations only (validated before any full-size model is built), in a rotating subset."""
    sd = big_sd(arch)
    i = BIG_CASES.index((arch, key))
    names = ["deleted", "renamed", ("extra-dim", "row-dropped")[i % 2], "int64", ("nan", "inf")[i % 2]]
    for name in names:
        _check(tmp_path, sd, key, name)


@pytest.mark.parametrize("arch", BIG_ARCHS)
def test_half_precision_full_size(tmp_path, big_sd, arch) -> None:
    sd = big_sd(arch)
    _check(tmp_path, sd, "layer1.0.conv2.conv.weight", "float16")
    _check(tmp_path, sd, "fc.weight", "bfloat16")


def test_whole_checkpoint_in_half_precision(tmp_path, demo_sd) -> None:
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in demo_sd.items()}, path)
    loaded = load_model(path)
    floats = sum(v.is_floating_point() for v in demo_sd.values())
    assert f"loaded {floats} float16 tensors as float32" in loaded.notes


def test_several_problems_in_one_line(tmp_path, demo_sd) -> None:
    sd = dict(demo_sd)
    del sd["layer1.0.conv2.conv.weight"]
    sd["bn1.weight"] = sd["bn1.weight"].to(torch.int64)
    sd["bn1.running_var"] = _poisoned(sd["bn1.running_var"], float("nan"))
    for i in range(10):
        sd[f"extra.{i}.weight"] = torch.zeros(1)
    path = tmp_path / "many.pth"
    torch.save(sd, path)
    with pytest.raises(PsdeployError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing: layer1.0.conv2.conv.weight" in message
    assert "10 unexpected:" in message and "(+2 more)" in message
    assert "bn1.weight int64 (expected a floating-point dtype" in message
    assert "bn1.running_var (1 NaN, 0 Inf)" in message


def test_random_bytes_are_not_a_checkpoint(tmp_path) -> None:
    data = random.Random(7).randbytes(4096)
    assert not data.startswith(b"PK") and data[0] != 0x80
    path = tmp_path / "noise.pth"
    path.write_bytes(data)
    with pytest.raises(PsdeployError) as info:
        load_model(path)
    message = str(info.value)
    assert "not a PyTorch checkpoint" in message and "code execution" not in message
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("magic", [b"PK\x03\x04", b"\x80\x02"])
def test_random_bytes_behind_a_magic_number(tmp_path, magic) -> None:
    for seed in range(8):
        path = tmp_path / f"noise{seed}.pth"
        path.write_bytes(magic + random.Random(seed).randbytes(2048))
        with pytest.raises(PsdeployError) as info:
            load_model(path)
        message = str(info.value)
        assert "not a readable PyTorch checkpoint" in message and "code execution" not in message, message
        assert "\n" not in message


class _Custom:
    """A plain user class: unpickling it needs a global, which weights_only refuses."""

    def __init__(self) -> None:
        self.epoch = 3


def test_pickle_with_a_custom_class_is_refused(tmp_path, demo_sd) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": demo_sd, "trainer": _Custom()}, path)
    with pytest.raises(PsdeployError) as info:
        load_model(path)
    message = str(info.value)
    assert "refused" in message and "code execution" in message and "_Custom" in message
    assert "\n" not in message


def test_legacy_pickle_with_a_custom_class_is_refused(tmp_path, demo_sd) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": demo_sd, "trainer": _Custom()}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(PsdeployError, match="code execution"):
        load_model(path)


def test_cli_export_missing_key_is_one_line(tmp_path, demo_sd) -> None:
    from psdeploy.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    ckpt = inputs / "broken.pth"
    torch.save({k: v for k, v in demo_sd.items() if k != "layer1.0.conv2.conv.weight"}, ckpt)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "layer1.0.conv2.conv.weight" in lines[0] and "broken.pth" in lines[0]
    assert not out.exists() or (out.is_dir() and not any(out.iterdir()))  # iterdir lists dot-files too
    assert sorted(p.name for p in tmp_path.iterdir()) in (["in"], ["in", "out"])
    assert [p.name for p in inputs.iterdir()] == ["broken.pth"]
