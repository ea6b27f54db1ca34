"""Bundle entries from artifact directories: each rebuilt from its own ONNX, target, options and tuning database.

An artifact's ``module.so`` has its weights inlined in its constant pool, so it cannot be shipped apart
as it is: the bundle rebuilds it the way compile built it (the same exported graph, the same schedules
from the same database) with the weights lifted out, and holds the result to the artifact's reference.
The ONNX it was compiled from is used where it is still there, unchanged; otherwise the graph is
exported again from the artifact's source (the checkpoint, or ``seeded:ARCH``), which must hash the same.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from psdeploy.backends import BuildOptions, Manifest
from psdeploy.backends.tvm import WINOGRAD_TILES, TvmBackend
from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.bundle.entry import EntrySpec
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO, export_onnx
from psdeploy.load import load_model
from psdeploy.parity import onnxruntime_runner, torch_runner


def _onnx_of(directory: Path, manifest: Manifest, scratch: Path) -> Path:
    """The verified ONNX the artifact was compiled from: its own file if unchanged, else exported again."""
    import onnx

    from psdeploy.export import ExportRecord

    if manifest.onnx and Path(manifest.onnx).is_file():
        record = ExportRecord.read(onnx.load(manifest.onnx, load_external_data=False), manifest.onnx)
        if record.source_sha256 == manifest.source_sha256 and record.lowering == manifest.lowering:
            return Path(manifest.onnx)
    if manifest.lowering == AUTO:
        raise PsdeployError(f"{directory}: built with --lowering auto from {manifest.onnx or 'a checkpoint'}, whose "
                            f"ONNX is gone; the per-layer choices cannot be exported again: compile it from an "
                            f"exported ONNX and keep that file")
    source = manifest.source
    if not source.startswith("seeded:") and not Path(source).is_file():
        raise PsdeployError(f"{directory}: its source {source} is gone (and it kept no ONNX); expected the "
                            f"checkpoint it was compiled from at that path")
    loaded = load_model(source, manifest.arch)
    if loaded.sha256 != manifest.source_sha256:
        raise PsdeployError(f"{directory}: its source {source} has changed since it was compiled (sha256 "
                            f"{loaded.sha256[:12]}… vs {manifest.source_sha256[:12]}…)")
    path = Path(tempfile.mkdtemp(prefix="onnx-", dir=scratch)) / "model.onnx"
    export_onnx(loaded, path, manifest.lowering, tuple(manifest.input_shape))
    return path


def _reference(manifest: Manifest, onnx_path: Path):
    """What the module must compute: the checkpoint in torch where it is at hand, unchanged, else its ONNX."""
    if manifest.source.startswith("seeded:") or Path(manifest.source).is_file():
        loaded = load_model(manifest.source, manifest.arch)
        if loaded.sha256 == manifest.source_sha256:
            return torch_runner(loaded.model)
    return onnxruntime_runner(onnx_path)


def _tuning_root(directory: Path, manifest: Manifest) -> Path:
    database = manifest.tuning.database if manifest.tuning else ""
    return Path(database).parent if database else directory / "no-tuning-db"


def artifact_spec(directory: Path, name: str, scratch: Path, regenerate_seeded: bool) -> EntrySpec:
    """The entry that rebuilds the TVM artifact in ``directory`` with its weights apart."""
    manifest = Manifest.read(directory)
    if manifest.backend != "tvm":
        raise PsdeployError(f"{directory}: a {manifest.backend} artifact; bundles carry TVM modules (their runner "
                            f"needs TVM's runtime alone)")
    if manifest.precision != "f32":
        raise PsdeployError(f"{directory}: a {manifest.precision} artifact; bundles carry fp32 TVM modules")
    if not manifest.input_shape[0]:
        raise PsdeployError(f"{directory}: runs any batch; bundles carry modules of one batch")
    target = manifest.target_object
    backend = TvmBackend()
    layout_name = re.sub(r"^nchw\d+c$", "nchwc", manifest.layout or "") or None
    options = BuildOptions(winograd=manifest.winograd, layout=layout_name, untuned=True,
                           tuning_db=_tuning_root(directory, manifest))
    layout = backend.conv_layout(target, options)
    if manifest.layout and str(layout) != manifest.layout:
        raise PsdeployError(f"{directory}: built in layout {manifest.layout}, which this machine builds as {layout}; "
                            f"bundle it on a machine of its target's vector width")
    onnx_path = _onnx_of(directory, manifest, scratch)
    seeded = manifest.source.startswith("seeded:")
    reference = None if (seeded and regenerate_seeded) else _reference(manifest, onnx_path)
    tolerance = float((manifest.parity or {}).get("tolerance", DEFAULT_TOLERANCE))
    return EntrySpec(name, "artifacts", onnx_path, tuple(manifest.input_shape), target, options, layout,
                     WINOGRAD_TILES[manifest.winograd], reference, tolerance,
                     {"artifact": str(directory), "source": manifest.source, "arch": manifest.arch,
                      "lowering": manifest.lowering, "winograd": manifest.winograd, "layout": str(layout),
                      "tuned_when_compiled": _tuned(manifest)}, check_tuning)


def _tuned(manifest: Manifest) -> str:
    t = manifest.tuning
    return f"{t.tasks_already_tuned + t.tasks_tuned}/{t.tasks}" if t else "n/a"


def check_tuning(entry: dict) -> None:
    """A rebuild that finds fewer schedules than the artifact had would ship a slower module than it: refused."""
    had, now = entry["tuned_when_compiled"], entry["tuned_tasks"]
    if had != "n/a" and int(now.split("/")[0]) < int(had.split("/")[0]):
        raise PsdeployError(f"{entry['artifact']}: its tuning database now covers {now} of its tasks, and it was "
                            f"compiled with {had}; the database was moved or pruned, so the bundle would ship a slower module")
