"""One module of a bundle: built with its weights apart, its inputs and expected outputs recorded.

Expected outputs come from the most independent reference at hand: with real weights shipped, the
reference given (the checkpoint in torch, or the source ONNX), and a CPU build is first held to it here;
with seeded weights regenerated on the server, no other runtime knows those weights, so a CPU module's
own outputs here are recorded, and a CUDA module's come from its CPU twin (the same lowered Relax
module, unscheduled, compiled for this CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psdeploy.backends import BuildOptions, Target
from psdeploy.backends.tvm.apart import ApartBuild, build_apart, compile_twin, lowered_apart
from psdeploy.backends.tvm.layout import ConvLayout
from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.bundle import runner
from psdeploy.errors import PsdeployError
from psdeploy.parity import Runner
from psdeploy.parity.compare import output_parity

CHECKED_INPUTS = 2  # inputs each module is checked on (there and here)
CHECKED_VALUES = 8192  # values of each output recorded (spread over it; max|ref| over all): 32 KiB, not 100 MB
TWIN_ROWS = 3  # distinct samples in a batch a batch-1 twin checks (repeated over the batch; 3: no batch's period)
INPUT_SEED = 1000  # inputs' seeds: INPUT_SEED + k
WEIGHT_SEED = 7  # a module's regenerated weights: WEIGHT_SEED * 100003 + index


@dataclass
class EntrySpec:
    """What to bundle as one module: its ONNX, how to build it, and where its expected outputs come from."""

    name: str
    group: str
    onnx_path: Path
    shape: tuple[int, ...]
    target: Target
    options: BuildOptions
    layout: ConvLayout
    winograd_tile: int
    reference: Runner | None  # real weights: what the module must equal; None: seeded weights, regenerated there
    tolerance: float = DEFAULT_TOLERANCE
    describe: dict[str, object] = field(default_factory=dict)  # recorded as is (source, lowering, case, ...)
    check: Callable[[dict], None] | None = None  # refuses the entry built, if it must
    twin_onnx: Path | None = None  # the same graph at batch 1: a batch-N CUDA module's twin runs it row by row


def _run_here(module: Path, weights: list[np.ndarray]) -> Runner:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(module)), tvm.cpu())
    tensors = [tvm.runtime.tensor(w) for w in weights]

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = vm["main"](tvm.runtime.tensor(x), *tensors)
        return [o.numpy() for o in (out if type(out).__name__ == "Array" else [out])]

    return run


def _weight_specs(values: list[np.ndarray], salt: int) -> tuple[list[dict], list[np.ndarray]]:
    """Per weight, a normal draw of its real tensor's mean and spread (the activations keep their scale)."""
    specs, regenerated = [], []
    for i, w in enumerate(values):
        spec = {"seed": WEIGHT_SEED * 100003 + salt * 1009 + i, "shape": list(w.shape),
                "mean": float(w.mean()), "std": float(w.std()) or 1.0}
        value = runner.regenerate(spec)
        specs.append({**spec, "sha256": runner.digest(value)})
        regenerated.append(value)
    return specs, regenerated


def add_entry(stage: Path, spec: EntrySpec, salt: int) -> dict[str, object]:
    """Build ``spec`` under ``stage/artifacts/NAME/`` and return its manifest entry (paths relative to ``stage``)."""
    folder = Path("artifacts") / spec.name
    (stage / folder).mkdir(parents=True)
    module = folder / "module.so"
    built: ApartBuild = build_apart(spec.onnx_path, spec.shape, spec.target, spec.options, stage / module,
                                    spec.winograd_tile, spec.layout)
    entry: dict[str, object] = {**spec.describe, "name": spec.name, "group": spec.group,
                                "device": spec.target.device, "target": spec.target.name,
                                "input_shape": list(spec.shape),
                                "module": str(module), "tolerance": spec.tolerance,
                                "tuned_tasks": f"{built.summary.tasks_already_tuned}/{built.summary.tasks}"}
    if spec.reference is None:
        weight_specs, weights = _weight_specs(built.weights, salt)
        entry["weights"] = {"regenerate": weight_specs}
    else:
        weights = built.weights
        np.savez(stage / folder / "weights.npz", **{f"w{i}": w for i, w in enumerate(weights)})
        entry["weights"] = {"file": str(folder / "weights.npz"), "count": len(weights)}
    inputs = [{"seed": INPUT_SEED + k, "shape": list(spec.shape)} for k in range(CHECKED_INPUTS)]
    if _twin_rows(spec):
        rows = min(TWIN_ROWS, spec.shape[0])
        inputs = [{**s, "shape": [rows, *spec.shape[1:]], "rows": spec.shape[0]} for s in inputs]
    entry["inputs"] = [{**s, "sha256": runner.digest(runner.regenerate(s))} for s in inputs]
    entry["expected"] = str(folder / "expected.npz")
    expected = _expected(stage, spec, built, stage / module, weights, inputs)
    np.savez(stage / folder / "expected.npz", **expected)
    return entry


def _twin_rows(spec: EntrySpec) -> bool:
    """Whether the expected outputs come from a batch-1 twin, row by row."""
    return spec.reference is None and spec.target.device != "cpu" and spec.twin_onnx is not None


def _twin(stage: Path, spec: EntrySpec, built: ApartBuild, weights: list[np.ndarray]) -> Runner:
    """The module's CPU twin (at batch 1 when ``spec.twin_onnx``, run row by row), over ``weights``."""
    lowered = built.lowered
    if _twin_rows(spec):
        lowered, real = lowered_apart(spec.twin_onnx, (1, *spec.shape[1:]), spec.target, spec.winograd_tile,
                                      spec.layout)
        if len(real) != len(built.weights) or not all(np.array_equal(a, b) for a, b in zip(real, built.weights)):
            raise PsdeployError(f"{spec.name}: its graph at batch 1 lifts other weights than at batch "
                                f"{spec.shape[0]}; its twin cannot check it")
    twin = stage.parent / f".{stage.name}.twin-{spec.name}.so"  # beside the stage, never in the bundle
    try:
        compile_twin(lowered, twin)
        run = _run_here(twin, weights)
    finally:
        twin.unlink(missing_ok=True)
    if not _twin_rows(spec):
        return run

    def by_rows(x: np.ndarray) -> list[np.ndarray]:  # x: TWIN_ROWS distinct samples repeated over the batch
        rows = [run(x[i:i + 1]) for i in range(min(TWIN_ROWS, len(x)))]
        return [np.concatenate([r[i] for r in rows])[np.arange(len(x)) % len(rows)] for i in range(len(rows[0]))]

    return by_rows


def _expected(stage: Path, spec: EntrySpec, built: ApartBuild, module: Path, weights: list[np.ndarray],
              inputs: list[dict]) -> dict[str, np.ndarray]:
    here = spec.target.device == "cpu"
    if spec.reference is not None:
        reference = spec.reference
    elif here:
        reference = _run_here(module, weights)
    else:
        reference = _twin(stage, spec, built, weights)
    cpu_run = _run_here(module, weights) if here and spec.reference is not None else None
    out: dict[str, np.ndarray] = {}
    for k, s in enumerate(inputs):
        x = runner.regenerate(s)
        refs = reference(x)
        for i, ref in enumerate(refs):
            if not np.all(np.isfinite(ref)):
                raise PsdeployError(f"{spec.name}: its reference output {i} is not finite; the weights or inputs "
                                    f"overflow")
            flat = np.ascontiguousarray(ref, dtype=np.float32).ravel()
            out[f"x{k}_out{i}"] = flat[runner.sampled(flat.size, CHECKED_VALUES)] if flat.size > CHECKED_VALUES else flat
            out[f"x{k}_out{i}_shape"] = np.array(ref.shape, dtype=np.int64)
            out[f"x{k}_out{i}_maxabs"] = np.array(np.abs(flat).max(), dtype=np.float32)
        if cpu_run is not None:  # the module with its weights apart must still compute what the artifact did
            for i, (ref, got) in enumerate(zip(refs, cpu_run(x))):
                err = output_parity(str(i), ref, got).rel_err
                if err > spec.tolerance:
                    raise PsdeployError(f"{spec.name}: built with its weights apart, output {i} is {err:.2e} from "
                                        f"the reference (max {spec.tolerance:.0e})")
    return out
