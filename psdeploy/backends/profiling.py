"""Per-node profiles from each runtime's own counters, with the convs among them set beside their work.

A profile opens what it is given through the registry (an artifact on its backend, an ONNX file on the
runtime named), times it with the runtime's profiler, names each node's network layer, and groups the
conv kernels by what they compute (output and reduction), so two runtimes' profiles compare conv by conv.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import onnx

from psdeploy.backends import artifact_module, backend_for, onnx_signature
from psdeploy.backends.artifact import KernelWork, Manifest
from psdeploy.backends.base import BuildOptions, ConvTime, NodeTime, Profile, per_conv
from psdeploy.backends.targets import parse_target
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey, conv_keys
from psdeploy.export.node_names import layer_of, value_layers, with_layer


def profile(path: str | Path, batch: int | None, runs: int, threads: int | None = None,
            on: str | None = None) -> Profile:
    """Per-node time from the runtime's own counters: an artifact on its backend, an ONNX file on the
    runtime named by ``on`` (``onnxruntime-cpu``, the default, or ``openvino-cpu``)."""
    from psdeploy.parity.compare import make_input

    path = Path(path)
    if path.is_dir():
        manifest = Manifest.read(path)
        target = manifest.target_object
        module = artifact_module(path, manifest, backend_for(target))
        if on is not None and on != target.name:
            raise PsdeployError(f"--on {on}: {path} is an artifact for {target.name}; it runs there only")
        declared, precision = tuple(manifest.input_shape), manifest.precision
    elif path.suffix == ".onnx" and path.is_file():
        target, module = parse_target(on or "onnxruntime-cpu"), path
        if target.backend == "tvm":
            raise PsdeployError(f"--on {on}: profile a TVM artifact (psdeploy compile) rather than an ONNX file")
        declared, _ = onnx_signature(path)
        precision = "f32"
    else:
        raise PsdeployError(f"{path}: expected an .onnx file or a compiled artifact directory")
    batch = batch or declared[0] or 1
    if declared[0] and batch != declared[0]:
        raise PsdeployError(f"{path}: built for batch {declared[0]}, cannot profile --batch {batch}; "
                            f"export with --dynamic-batch or compile for that batch")
    check_memory(f"--batch {batch}", (batch, *declared[1:]))
    backend = backend_for(target)
    x = make_input((batch, *declared[1:]), seed=0)
    with tempfile.TemporaryDirectory(prefix="psdeploy-profile-") as work:
        if not path.is_dir() and target.backend != "onnxruntime":
            backend.build(path, x.shape, target, BuildOptions(), Path(work))
            module = Path(work) / backend.module_file
        rows, runs_on = backend.profile(module, target, x, runs, threads, precision)
    unplaced = [row for row in rows if not layer_of(row.name)]
    if unplaced and not path.is_dir():  # nodes a runtime names after the value they write: that value's layer
        layers = value_layers(path)
        for row in unplaced:
            row.name = with_layer(row.name, layers.get(row.name.split("/")[0], ""))
    result = Profile(str(path), runs_on, batch, runs, rows)
    if path.is_dir() and manifest.kernels:
        result.convs = _kernel_convs(rows, manifest.kernels)
    else:
        keys = backend.conv_keys(module) if path.is_dir() else conv_keys(onnx.load(str(path), load_external_data=False))
        result.convs = _layer_convs(result, keys)
    return result


def _kernel_convs(rows: list[NodeTime], kernels: dict[str, KernelWork]) -> list[ConvTime]:
    """Per conv key, the time of the compiled kernels that compute it (TVM: a kernel per workload)."""
    return per_conv([ConvTime(kernels[r.name].key, r.ms_per_run, r.calls_per_run,
                              kernels[r.name].flops * r.calls_per_run) for r in rows if r.name in kernels])


def _layer_convs(profile: Profile, node_keys: dict[str, ConvKey]) -> list[ConvTime]:
    """Per conv key, the conv nodes the runtime ran for layers that are one plain conv (not a PSConv layer's
    branches); the layout reorders around them are counted apart, as the profile's reorders."""
    keys: dict[str, list[ConvKey]] = defaultdict(list)
    for node, key in node_keys.items():
        keys[layer_of(node)].append(key)
    times = []
    for r in profile.nodes:
        key = keys.get(layer_of(r.name), [])
        if "Conv" in r.op_type and len(key) == 1:
            times.append(ConvTime(key[0], r.ms_per_run, r.calls_per_run, key[0].flops(profile.batch) * r.calls_per_run))
    return per_conv(times)
