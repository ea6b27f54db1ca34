"""The export record: what an ONNX file ``psdeploy export`` wrote is, as one typed metadata entry.

Export writes it once (one JSON value under ``psdeploy.export`` in the ONNX metadata) and compile
reads it once, validated: the architecture and lowering (with the per-layer choices and the timings
of a ``--lowering auto`` search), the input shape and whether the batch is dynamic, the checkpoint it
came from and its hash, the opset, and the preprocessing its images go through (the model card's). Nothing is flattened to strings on the way.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import onnx
from pydantic import PositiveInt

from psdeploy.errors import PsdeployError
from psdeploy.images.preprocess import Preprocess
from psdeploy.schema import Strict, validated_json


class SearchRow(Strict):
    """One PSConv geometry of a lowering search: its layers, each lowering's time and the winner."""

    geometry: str
    layers: list[str]
    lowering: str  # the winner
    timings_ms: dict[str, float]  # lowering (and "plain") -> median ms
    ratio_to_plain: float

    @property
    def lowerings(self) -> list[str]:
        """The candidates timed, in the order they ran (the plain conv left out)."""
        return [name for name in self.timings_ms if name != "plain"]


class ExportRecord(Strict):
    arch: str
    lowering: str
    choices: dict[str, str] | None = None  # lowering "auto": layer -> the lowering it got
    search: list[SearchRow] | None = None  # lowering "auto": the timings behind the choices
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]  # N,C,H,W
    dynamic_batch: bool
    source: str
    source_sha256: str
    opset: PositiveInt
    preprocess: Preprocess | None = None  # what images go through before the network (None: exported before it)

    KEY: ClassVar[str] = "psdeploy.export"

    def stamp(self, model: onnx.ModelProto) -> None:
        """Write this record into ``model``'s metadata (replacing an earlier one)."""
        kept = [p for p in model.metadata_props if p.key != self.KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = self.KEY, self.model_dump_json()

    @classmethod
    def read(cls, model: onnx.ModelProto, path: str) -> ExportRecord:
        """The record of an ONNX file psdeploy exported, or a one-line error naming ``path``."""
        entries = [p.value for p in model.metadata_props if p.key == cls.KEY]
        if not entries and any(p.key.startswith("psdeploy.") for p in model.metadata_props):
            raise PsdeployError(f"{path}: exported by an earlier psdeploy (one metadata key per field, no "
                                f"'{cls.KEY}' record); export the checkpoint again")
        if not entries:
            raise PsdeployError(f"{path}: not a PS-ResNet/ResNet exported by psdeploy (no '{cls.KEY}' metadata); "
                                f"export the checkpoint with 'psdeploy export' first, or compile the checkpoint")
        return validated_json(cls, entries[0], f"{path}: metadata '{cls.KEY}'")


def read_export_record(path: Path) -> ExportRecord:
    """The record of the ONNX file at ``path``, or a one-line error naming it."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        raise PsdeployError(f"{path}: not a readable ONNX model; expected an ONNX file from 'psdeploy export'") from None
    return ExportRecord.read(model, str(path))
