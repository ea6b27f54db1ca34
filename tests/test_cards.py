"""Model cards in models/ describe exactly what the registry builds."""

from __future__ import annotations

import json

import yaml

from psdeploy.arch.registry import ARCHS
from psdeploy.images.preprocess import Preprocess
from tests.conftest import REPO


def test_every_arch_has_a_matching_card() -> None:
    for name, cfg in ARCHS.items():
        card = yaml.safe_load((REPO / "models" / f"{name}.yaml").read_text())
        arch = card["architecture"]
        assert card["name"] == name
        assert tuple(arch["layers"]) == cfg.layers
        for key in ("groups", "width_per_group", "stem", "stem_width", "base_planes", "num_classes", "psconv",
                    "input_size", "demo_data"):
            assert arch[key] == getattr(cfg, key), (name, key)
        assert ("psconv" in card) == cfg.psconv
        assert Preprocess.model_validate_json(json.dumps(card["preprocess"])) == cfg.preprocess, name
