"""Each backend refuses every build option it does not use, from the one table ``Backend.uses_options``:
a new option, or a backend that forgets one, is caught here without a new test."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.backends import BACKENDS, BuildOptions, Target
from psdeploy.backends.tune_options import RpcTracker
from psdeploy.calibration import CalibrationSet
from psdeploy.cli import main
from psdeploy.errors import PsdeployError

# a value other than the default for every build option users can set
CALIBRATION = CalibrationSet("calib.npy", np.zeros((15, 3, 8, 8), np.float32), np.zeros((5, 3, 8, 8), np.float32),
                             "0" * 64)
SET_VALUES = {"precision": "int8", "calibration": CALIBRATION, "winograd": "f2", "layout": "nhwc", "tune_trials": 8, "tune_time_s": 90.0,
              "untuned": True, "rpc": RpcTracker("10.0.0.5", 9190, "xeon"), "tuning_db": Path("my-db")}
SHOWN = {"precision": "--precision int8", "calibration": "--calibration calib.npy", "winograd": "--winograd f2", "layout": "--layout nhwc",
         "tune_trials": "--tune-trials 8", "tune_time_s": "--tune-time 90s", "untuned": "--untuned",
         "rpc": "--rpc 10.0.0.5:9190",
         "tuning_db": "--tuning-db my-db"}
TARGETS = {"onnxruntime": Target("onnxruntime", "onnxruntime-cpu"), "openvino": Target("openvino", "openvino-cpu"),
           "tvm": Target("tvm", "llvm", {"kind": "llvm", "mcpu": "x86-64", "num-cores": 1})}
UNUSED = [(backend, option) for backend in BACKENDS for option in SET_VALUES
          if option not in BACKENDS[backend].uses_options]


def test_every_option_has_a_value_here() -> None:
    settable = {f.name for f in fields(BuildOptions) if "flag" in f.metadata}
    assert settable == set(SET_VALUES) == set(SHOWN)
    assert all(b.uses_options <= settable for b in BACKENDS.values())


def _options(option: str) -> BuildOptions:
    # --rpc measures tuning candidates: needs a budget; int8 and its calibration data go together
    extra = {"rpc": {"tune_trials": 1}, "precision": {"calibration": CALIBRATION},
             "calibration": {"precision": "int8"}}.get(option, {})
    return BuildOptions(**{option: SET_VALUES[option], **extra})


@pytest.mark.parametrize("backend, option", UNUSED, ids=[f"{b}-{o}" for b, o in UNUSED])
def test_unused_option_refused(backend, option) -> None:
    own = ", ".join(f.metadata["flag"] for f in fields(BuildOptions) if f.name in BACKENDS[backend].uses_options)
    with pytest.raises(PsdeployError) as error:
        BACKENDS[backend].check_options(TARGETS[backend], _options(option))
    given, _, why = str(error.value).partition(": ")
    assert SHOWN[option] in given.split(", ") and why.startswith(f"not an option of {TARGETS[backend].name} "
                                                                  if "," not in given else "not options of ")
    assert str(error.value).endswith(f"(its options: {own})" if own else "(it has none)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_defaults_and_used_options_accepted(backend) -> None:
    BACKENDS[backend].check_options(TARGETS[backend], BuildOptions())
    if backend != "tvm":  # TVM checks its options further (layout vs Winograd, CUDA): its own tests
        for option in BACKENDS[backend].uses_options:
            BACKENDS[backend].check_options(TARGETS[backend], _options(option))


def test_openvino_layout_refused_from_cli_and_api(tmp_path) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", "seeded:ps_resnet_digits", "--target", "openvino-cpu",
                                       "--layout", "nhwc", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: --layout nhwc: not an option of openvino-cpu "
                                     "(its options: --precision, --calibration)"), result.output
    with pytest.raises(PsdeployError, match=r"^--layout nhwc: not an option of openvino-cpu"):
        api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=out, layout="nhwc")
    with pytest.raises(PsdeployError, match=r"^--tuning-db elsewhere: not an option of onnxruntime-cpu \(its options: "
                                            r"--precision, --calibration\)"):
        api.compile("seeded:ps_resnet_digits", target="onnxruntime-cpu", output=out, tuning_db="elsewhere")
    assert not out.exists()
