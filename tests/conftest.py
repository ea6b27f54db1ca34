"""Shared fixtures: small seeded checkpoints written the ways users have them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psdeploy.arch.seeded import seeded_model

REPO = Path(__file__).resolve().parents[1]
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
