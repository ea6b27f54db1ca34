"""The package's structure is checked, not hoped for: import-linter's contracts (pyproject.toml)
say which layer may import which; every import, lazy ones inside functions included, is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_stages_are_importable_by_name_and_the_api_is_psdeploy_api() -> None:
    """No API function shadows a pipeline package: ``import psdeploy.compile`` gives the package."""
    import importlib

    import psdeploy
    from psdeploy import api

    for stage in ("load", "rewrite", "export", "compile", "verify", "bench", "report", "search"):
        module = importlib.import_module(f"psdeploy.{stage}")
        assert getattr(psdeploy, stage) is module, stage
    assert {"load", "inspect", "export", "compile", "verify", "bench", "run", "profile", "report"} <= set(api.__all__)
    assert api.compile.__module__ == "psdeploy.api"
