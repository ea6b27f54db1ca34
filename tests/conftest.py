"""Shared fixtures: small seeded checkpoints written the ways users have them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from psdeploy.arch.seeded import seeded_model

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs a worker per core) torch keeps to one thread per worker: two
    workers each running torch on every core oversubscribe the machine, and its idle threads spin."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


# The files with the most test time (``pytest --durations=0`` on a 2-core Xeon: 70-170 s each, the rest under
# 45 s). ``make test``'s two xdist workers take whole files in collection order (``--no-loadscope-reorder``;
# xdist's own order is by test count), so these run first and the short files even the workers out at the
# end: started last, one of them kept one worker busy alone for a minute.
LONGEST_FILES_FIRST = ("test_bundle.py", "test_tvm_layout.py", "test_tvm_fleet.py", "test_compile_tvm.py", "test_tvm_tuning.py",
                       "test_report.py", "test_fused_winograd.py", "test_profile_convs.py", "test_int8.py",
                       "test_tvm_int8.py", "test_search.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


DEMO_CHECKPOINT = REPO / "models" / "ps_resnet_digits.pth"


@pytest.fixture(scope="session")
def digits_state_dict() -> dict[str, torch.Tensor]:
    return seeded_model("ps_resnet_digits", seed=3).state_dict()


@pytest.fixture()
def write_ckpt(tmp_path: Path):
    def write(obj: object, name: str = "ckpt.pth") -> Path:
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return write


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# In float64 every rewrite identity holds to rounding: PS-ResNeXt-50 deployed vs released [6e-14].
# Tests of the algebra run there, so any slip in it (an eps, a permutation, a bias) shows at once.
EXACT_TOL = 1e-10


@pytest.fixture()
def float64():
    """New tensors and modules are float64 inside the test (seeded models and the rewrite included)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# Parity limits of the tests, each set from the error the correct code makes on the seeded demo-size
# nets (worst measured, in brackets, times a margin of ~5): the shipping default (1e-4) is for full-size
# trained networks and would let a wrong fold through.
REWRITE_TOL = 3e-6  # PyTorch fp32: folding and branching only re-associate sums [6.5e-7]
ONNXRUNTIME_TOL = 5e-6  # onnxruntime's MLAS kernels sum in their own order on top [9.1e-7]
OPENVINO_TOL = 5e-6  # oneDNN's fp32 kernels, precision hint f32 [8.4e-7]
TVM_TOL = 5e-6  # TVM's default and tuned TIR schedules, fused kernel included [7.7e-7]
WINOGRAD_TOL = 2e-5  # the transforms' rounding grows with the tile: F(4x4,3x3) [2.1e-6], F(2x2,3x3) [6.2e-7]


def assert_runs_like_torch(run, model: torch.nn.Module, shape: tuple[int, ...], tolerance: float) -> float:
    """The test's own check, independent of the code under test: same random input, outputs compared."""
    import numpy as np

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = model.eval()(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run(x.numpy())
    assert len(got) == len(expected)
    worst = 0.0
    for g, e in zip(got, expected):
        e = e.numpy()
        assert g.shape == e.shape
        worst = max(worst, float(np.abs(g - e).max() / np.abs(e).max()))
    assert worst <= tolerance, f"rel err {worst:.3g} > {tolerance:g}"
    return worst
