"""Validated files: recipes, report recipes and artifact manifests are pydantic models.

Whatever a user hands psdeploy is checked against its schema before anything reads a
field, and a mismatch becomes one line naming the file, the key and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from psdeploy.errors import PsdeployError


class Strict(BaseModel):
    """Unknown keys are errors, and values are not coerced from other kinds ("1" is no int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


M = TypeVar("M", bound=BaseModel)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "top level"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if error["type"] == "missing":
        return f"'{where}' is required"
    return f"'{where}': {error['msg'].lower()}, got {error['input']!r}"


def validated(model: type[M], data: Any, source: str) -> M:
    """``model`` built from ``data``, or a one-line ``PsdeployError`` naming ``source`` and the keys."""
    if not isinstance(data, dict):
        raise PsdeployError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        raise PsdeployError(f"{source}: {'; '.join(problems)}") from None


def validated_json(model: type[M], text: str, source: str) -> M:
    """``model`` parsed from JSON ``text`` (arrays may fill tuples), or a one-line ``PsdeployError`` naming ``source``."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        problems = [_describe(e) if e["type"] != "json_invalid" else f"not JSON ({e['msg']})"
                    for e in exc.errors(include_url=False)]
        raise PsdeployError(f"{source}: {'; '.join(problems)}") from None


class _AliasRefused(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__(f"line {mark.line + 1}")


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name``): each one repeats a whole subtree, so a few lines of
    nested aliases expand to billions of nodes (an alias bomb). Recipes are short and need none."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, option: str = "--recipe") -> Any:
    """A YAML file's content, or a one-line error naming the file. Every YAML psdeploy reads comes here."""
    path = Path(path)
    if not path.is_file():
        raise PsdeployError(f"{option} {path}: no such file")
    try:
        return yaml.load(path.read_text(), Loader=_NoAliasLoader)
    except _AliasRefused as exc:
        raise PsdeployError(f"{path}: YAML aliases (*name) are not accepted ({exc}); write the value out "
                            f"instead") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PsdeployError(f"{path}: not valid YAML ({first})") from None


def beside(recipe: str | Path, value: str) -> str:
    """A path written in the file ``recipe``, made relative to that file's folder (an absolute or ``~`` one is
    kept): recipes mean the same wherever psdeploy runs. ``..`` is folded lexically, so messages name
    ``models/x.pth`` rather than ``recipes/demo/../../models/x.pth``."""
    path = Path(value).expanduser()
    return str(path) if path.is_absolute() else os.path.normpath(Path(recipe).parent / path)
