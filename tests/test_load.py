"""Every checkpoint wrapper users bring, and every bad input, ends in a model or one clear error."""

from __future__ import annotations

import pytest
import torch

from psdeploy.arch.seeded import seeded_model
from psdeploy.errors import PsdeployError
from psdeploy.load import load_model


def _same_function(loaded, state_dict) -> None:
    reference = seeded_model("ps_resnet_digits", seed=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))


@pytest.mark.parametrize(
    "wrap, note",
    [
        (lambda sd: sd, None),
        (lambda sd: {"state_dict": sd, "meta": {"epoch": 3}, "optimizer": {"lr": 0.1}}, "unwrapped 'state_dict'"),
        (lambda sd: {"model": sd}, "unwrapped 'model'"),
        (lambda sd: {f"module.{k}": v for k, v in sd.items()}, "module."),
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, "module."),
    ],
)
def test_wrappers(write_ckpt, digits_state_dict, wrap, note) -> None:
    loaded = load_model(write_ckpt(wrap(digits_state_dict)))
    assert loaded.arch == "ps_resnet_digits"
    assert note is None or any(note in n for n in loaded.notes)
    _same_function(loaded, digits_state_dict)


def test_old_checkpoint_without_bn_counters(write_ckpt, digits_state_dict) -> None:
    sd = {k: v for k, v in digits_state_dict.items() if not k.endswith("num_batches_tracked")}
    _same_function(load_model(write_ckpt(sd)), sd)


def test_mmdetection_detector_yields_backbone(write_ckpt) -> None:
    backbone = seeded_model("ps_resnet50", seed=1, num_classes=None)
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 256, 1, 1)
    sd["rpn_head.rpn_cls.weight"] = torch.zeros(3, 256, 1, 1)
    loaded = load_model(write_ckpt({"state_dict": sd, "meta": {"mmdet_version": "1.0"}}))
    assert loaded.arch == "ps_resnet50" and loaded.config.num_classes is None
    assert loaded.model.output_names == ["C2", "C3", "C4", "C5"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = loaded.model(x)
        expected = backbone(x)
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    assert all(torch.equal(a, b) for a, b in zip(outs, expected))
    assert loaded.notes[-1] == f"detector checkpoint: kept {len(backbone.state_dict())} 'backbone.' keys, dropped 2 " \
                               f"neck/head keys"


def test_detector_backbone_with_a_classifier_head_is_refused(write_ckpt) -> None:
    model = seeded_model("ps_resnet_digits", seed=1)
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(PsdeployError, match=r"detector backbone unexpectedly holds an 'fc' head \(fc\.bias, fc\.weight\)"):
        load_model(write_ckpt(sd))


@pytest.mark.parametrize("arch", ["resnet50", "ps_resnext50_32x4d", "resnext101_32x4d", "ps_resnet101"])
def test_arch_detected_from_keys(write_ckpt, arch) -> None:
    sd = seeded_model(arch).state_dict()
    assert load_model(write_ckpt(sd)).arch == arch


def test_wrong_arch(write_ckpt, digits_state_dict) -> None:
    with pytest.raises(PsdeployError, match=r"does not fit resnet_digits: .*missing.*unexpected"):
        load_model(write_ckpt(digits_state_dict), arch="resnet_digits")


def test_unknown_arch_name(write_ckpt, digits_state_dict) -> None:
    with pytest.raises(PsdeployError, match="unknown architecture 'ps_resnet18'"):
        load_model(write_ckpt(digits_state_dict), arch="ps_resnet18")


def test_missing_keys(write_ckpt, digits_state_dict) -> None:
    sd = dict(digits_state_dict)
    del sd["layer2.1.conv2.gwconv_shift.weight"]
    with pytest.raises(PsdeployError, match=r"1 missing: layer2\.1\.conv2\.gwconv_shift\.weight"):
        load_model(write_ckpt(sd))


def test_many_missing_keys_are_counted_not_all_listed(write_ckpt, digits_state_dict) -> None:
    sd = dict(digits_state_dict)
    gone = sorted(k for k in sd if k.startswith("layer3.1.") and "num_batches" not in k)[:11]
    for key in gone:
        del sd[key]
    with pytest.raises(PsdeployError, match=r"11 missing: .* \.\.\. \(\+3 more\)") as error:
        load_model(write_ckpt(sd))
    assert sum(key in str(error.value) for key in gone) == 8


def test_unexpected_and_misshaped_keys(write_ckpt, digits_state_dict) -> None:
    sd = dict(digits_state_dict)
    sd["layer1.0.se.fc.weight"] = torch.zeros(4, 4)
    sd["layer1.0.conv3.weight"] = torch.zeros(64, 16, 3, 3)
    with pytest.raises(PsdeployError) as info:
        load_model(write_ckpt(sd))
    message = str(info.value)
    assert "1 unexpected: layer1.0.se.fc.weight" in message and "1 mis-shaped: layer1.0.conv3.weight" in message
    assert "layer1.0.conv3.weight (64, 16, 3, 3) (expected (64, 16, 1, 1))" in message
    assert "\n" not in message


def test_truncated_file(tmp_path, write_ckpt, digits_state_dict) -> None:
    path = write_ckpt(digits_state_dict)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PsdeployError, match="not a readable PyTorch checkpoint"):
        load_model(path)


def test_empty_and_missing_file(tmp_path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(PsdeployError, match="file is empty"):
        load_model(tmp_path / "empty.pth")
    with pytest.raises(PsdeployError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.pth")


class _Payload:
    """Unpickling this would run code: exactly what weights_only refuses."""

    def __reduce__(self):
        return (print, ("side effect",))


def test_pickle_needing_code_is_refused(write_ckpt, digits_state_dict, capsys) -> None:
    path = write_ckpt({"state_dict": digits_state_dict, "hook": _Payload()})
    with pytest.raises(PsdeployError, match="refused: the checkpoint needs arbitrary unpickling") as refused:
        load_model(path)
    assert "side effect" not in capsys.readouterr().out
    # the one line of torch's long message that says what was refused (the payload's reduce: print)
    assert str(refused.value).endswith("Detail: Unsupported global: GLOBAL print was not an allowed global by default.")
    assert "\n" not in str(refused.value)


def test_not_a_resnet(write_ckpt) -> None:
    with pytest.raises(PsdeployError, match="not a ResNet-family checkpoint") as error:
        load_model(write_ckpt({f"encoder.{i}.weight": torch.zeros(3, 3) for i in range(7)}))
    assert "first keys: ['encoder.0.weight', 'encoder.1.weight', 'encoder.2.weight', 'encoder.3.weight', " \
           "'encoder.4.weight'])" in str(error.value)


def test_head_size_read_from_the_weight_when_the_bias_is_gone(write_ckpt) -> None:
    sd = seeded_model("ps_resnet_digits", seed=1, num_classes=7).state_dict()
    del sd["fc.bias"]
    with pytest.raises(PsdeployError) as error:
        load_model(write_ckpt(sd))
    assert "1 missing: fc.bias" in str(error.value) and "mis-shaped" not in str(error.value)


def test_one_channel_stem_with_arch_given(write_ckpt) -> None:
    import dataclasses

    from psdeploy.arch.registry import build, get_config

    model = build(dataclasses.replace(get_config("ps_resnet_digits"), in_chans=1))
    loaded = load_model(write_ckpt(model.state_dict()), arch="ps_resnet_digits")
    assert loaded.config.in_chans == 1


@pytest.mark.parametrize("value, dtype", [(True, "bool"), (1 + 1j, "complex64")])
def test_a_step_counter_that_is_no_number_is_refused(write_ckpt, digits_state_dict, value, dtype) -> None:
    sd = dict(digits_state_dict)
    sd["bn1.num_batches_tracked"] = torch.tensor(value)
    with pytest.raises(PsdeployError, match=rf"bn1\.num_batches_tracked {dtype} \(expected an integer or float dtype\)"):
        load_model(write_ckpt(sd))


def test_legacy_pickle_format_loads(write_ckpt, digits_state_dict, tmp_path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(digits_state_dict, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    assert torch.equal(load_model(path).model.conv1.weight, digits_state_dict["conv1.weight"])


def test_weights_beyond_float32_or_summing_past_it(write_ckpt, digits_state_dict) -> None:
    sd = dict(digits_state_dict)
    sd["conv1.weight"] = digits_state_dict["conv1.weight"].double() * 0 + 1e39  # Inf once loaded as float32
    with pytest.raises(PsdeployError, match=r"conv1\.weight \(0 NaN, 432 Inf\)"):
        load_model(write_ckpt(sd))
    sd["conv1.weight"] = digits_state_dict["conv1.weight"] * 0 + 3e38  # finite, though their float32 sum is not
    assert load_model(write_ckpt(sd)).model.conv1.weight.max() == torch.tensor(3e38)


def test_no_state_dict_inside(write_ckpt) -> None:
    with pytest.raises(PsdeployError, match="no state dict found"):
        load_model(write_ckpt({"epoch": 3, "config": "x"}))


def test_seeded_spec() -> None:
    loaded = load_model("seeded:ps_resnet_digits@4")
    assert loaded.arch == "ps_resnet_digits" and loaded.notes == ("synthetic weights, seed 4",)
    default, zero = load_model("seeded:ps_resnet_digits"), load_model("seeded:ps_resnet_digits@0")
    assert default.notes == zero.notes == ("synthetic weights, seed 0",) and default.sha256 == zero.sha256
    assert all(torch.equal(a, b) for a, b in zip(default.model.state_dict().values(), zero.model.state_dict().values()))
    with pytest.raises(PsdeployError, match="integer seed"):
        load_model("seeded:ps_resnet_digits@x")


def test_text_file_is_not_a_checkpoint(tmp_path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("epoch 3, top-1 0.99\n")
    with pytest.raises(PsdeployError, match="not a PyTorch checkpoint: neither a zip archive .* nor a pickle"):
        load_model(path)


def test_truncated_legacy_pickle_never_claims_code_execution(tmp_path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3), "fc.bias": torch.ones(2)}, buffer,
               _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    path = tmp_path / "cut.pth"
    for end in range(1, len(data) - 1):  # every cut, including those inside a GLOBAL's module or name
        path.write_bytes(data[:end])
        with pytest.raises(PsdeployError) as info:
            load_model(path)
        assert "code execution" not in str(info.value), (end, str(info.value))


def test_input_channels_read_from_the_stem(write_ckpt) -> None:
    sd = seeded_model("ps_resnet_digits", seed=3).state_dict()
    sd["conv1.weight"] = sd["conv1.weight"][:, :1].clone()  # a single-channel (grayscale) variant
    loaded = load_model(write_ckpt(sd))
    assert loaded.arch == "ps_resnet_digits" and loaded.config.in_chans == 1
    with torch.no_grad():
        assert loaded.model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_checked_against_the_given_arch_before_building(write_ckpt, digits_state_dict, monkeypatch) -> None:
    from psdeploy.load import loader  # (psdeploy.load is the API function; the package is reached by from-import)

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built for a checkpoint that does not fit")

    monkeypatch.setattr(loader, "_empty_model", no_build)
    monkeypatch.setattr(loader, "build", no_build)
    with pytest.raises(PsdeployError, match="does not fit ps_resnext101_32x4d: .*missing"):
        load_model(write_ckpt(digits_state_dict), arch="ps_resnext101_32x4d")
