"""Tuning budgets as users give them: --tune-time and --rpc parsed and refused in one line, recipes
carry them, batches sized to the budget, and trials sent where the weighted time is."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import psdeploy.api
from psdeploy.backends import BuildOptions
from psdeploy.backends.tune_options import (
    RpcTracker,
    parse_duration,
    parse_tracker,
    rpc_tracker,
)
from psdeploy.cli import main
from psdeploy.errors import PsdeployError


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400),
                                           ("45", 45), (" 2M ", 120), ("0.5h", 1800), (7.5, 7.5)])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "0s", "-3m", "m", "1h 30m", "1d", "inf", float("nan"), 0])
def test_bad_durations_name_the_option(text) -> None:
    with pytest.raises(PsdeployError, match=r"^--tune-time .*expected a positive duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, address", [("10.0.0.5:9190", ("10.0.0.5", 9190)), ("tracker:1", ("tracker", 1)),
                                           ("[::1]:9190", ("[::1]", 9190))])
def test_tracker_addresses(text, address) -> None:
    assert parse_tracker(text) == address


@pytest.mark.parametrize("text", ["tracker", ":9190", "tracker:", "tracker:0", "tracker:65536", "tracker:http"])
def test_bad_tracker_addresses_name_the_option(text) -> None:
    with pytest.raises(PsdeployError, match=r"^--rpc .*expected HOST:PORT"):
        parse_tracker(text)


def test_rpc_needs_its_key_and_a_budget() -> None:
    assert rpc_tracker(None, None) is None
    assert rpc_tracker("h:9190", " xeon ") == RpcTracker("h", 9190, "xeon")
    with pytest.raises(PsdeployError, match="--rpc-key xeon: needs --rpc"):
        rpc_tracker(None, "xeon")
    with pytest.raises(PsdeployError, match="needs --rpc-key"):
        rpc_tracker("h:9190", "")
    with pytest.raises(PsdeployError, match="give --tune-trials or --tune-time"):
        BuildOptions(rpc=RpcTracker("h", 9190, "xeon"))
    assert BuildOptions(tune_time_s=60.0, rpc=RpcTracker("h", 9190, "xeon")).tunes
    assert not BuildOptions().tunes


@pytest.mark.parametrize("flags, option", [(["--tune-time", "soon"], "'--tune-time'"),
                                           (["--tune-time", "0"], "'--tune-time'"),
                                           (["--rpc", "tracker", "--rpc-key", "x"], "'--rpc'"),
                                           (["--tune-trials", "4", "--rpc", "h:9190"], "--rpc-key"),
                                           (["--untuned", "--tune-time", "1m"], "--untuned: ")])
def test_cli_refuses_bad_values_in_one_line(tmp_path, flags, option) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--target", "llvm", *flags,
                                       "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert option in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_openvino_refuses_tuning_options(tmp_path) -> None:
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--target", "openvino-cpu",
                                       "--tune-time", "1m", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--tune-time" in result.output


@pytest.mark.parametrize("body, key", [("time: soon", "tuning.time"), ("time: -5", "tuning.time"),
                                       ("rpc: tracker", "tuning.rpc"), ("rpc_key: 7", "tuning.rpc_key")])
def test_recipe_tuning_keys_are_checked(tmp_path, body, key) -> None:
    from psdeploy.api.recipes import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"model: {{checkpoint: x}}\nbackend: {{target: llvm}}\ntuning: {{{body}}}\n")
    with pytest.raises(PsdeployError, match=key.replace(".", r"\.")):
        load_recipe(path)


def test_recipe_budget_reaches_the_build_and_flags_override_it(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tvm")

    seen = []
    monkeypatch.setattr(psdeploy.api, "compile_model", lambda request: seen.append(request.options))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {checkpoint: seeded:ps_resnet_digits}\nbackend: {target: llvm}\n"
                      "tuning: {trials: 500, time: 20m, rpc: 'tracker:9190', rpc_key: xeon}\noutput: out\n")
    from psdeploy import api

    api.compile(recipe=recipe)
    api.compile(recipe=recipe, tune_time="90s", rpc_key="epyc")
    assert (seen[0].tune_trials, seen[0].tune_time_s, seen[0].rpc) == (500, 1200.0, RpcTracker("tracker", 9190, "xeon"))
    assert (seen[1].tune_time_s, seen[1].rpc) == (90.0, RpcTracker("tracker", 9190, "epyc"))
    assert not seen[0].untuned
    recipe.write_text("model: {checkpoint: seeded:ps_resnet_digits}\nbackend: {target: llvm}\n"
                      "tuning: {untuned: true}\noutput: out\n")
    api.compile(recipe=recipe)
    assert seen[2].untuned and not seen[2].tunes


@pytest.mark.parametrize("trials, tasks, batch", [
    (64, 34, 2),  # the demo network: each task's even share is one batch
    (40, 4, 8),  # share 10: a first batch of 8, the rest by gradient
    (1000, 10, 50),  # share 100: half of it first
    (100000, 10, 64),  # MetaSchedule's largest batch
    (3, 4, 1),
])
def test_batches_are_sized_to_the_budget(trials, tasks, batch) -> None:
    from psdeploy.backends.tvm.tuning import batch_size

    assert batch_size(trials, tasks) == batch


def test_next_batch_goes_where_the_weighted_time_is() -> None:
    from psdeploy.backends.tvm.scheduler import FAILED_MS, gradient

    slow, fast = [4.0, 4.0], [1.0, 1.0]
    assert gradient(slow, 1.0) > gradient(fast, 1.0)
    assert gradient(fast, 8.0) > gradient(slow, 1.0)  # a kernel called 8 times weighs 8 times
    assert gradient([9.0, 6.0, 5.0, 4.0, 4.0], 1.0) > gradient([4.0, 4.0, 4.0, 4.0, 4.0], 1.0)  # still improving
    assert gradient([4.0], 1.0) > gradient([4.0, 4.0], 1.0)  # fewer batches so far
    assert gradient([], 1.0) == gradient([FAILED_MS], 1.0) == float("-inf")  # nothing ran: no gradient
