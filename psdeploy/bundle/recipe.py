"""A report recipe's TVM cases as one bundle, and the bundle's results as the report.

The report of a machine psdeploy cannot run on (a GPU server with no TVM) is measured in two halves:
here, ``psdeploy bundle --recipe R`` builds every case the recipe times on its TVM backends, seeded
weights regenerated there (and its eager-PyTorch layer cases, as shapes, for where torch is), one
interleaved group per backend and report group, as ``psdeploy report``
times them; there, ``run.py`` checks and times them; here again, ``psdeploy report --from-bundle-results``
turns its JSON into the report's Markdown, JSON, CSV and charts.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from psdeploy.backends.tvm import WINOGRAD_TILES, TvmBackend
from psdeploy.bundle.entry import EntrySpec
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO
from psdeploy.report import ReportConfig, ReportData, load_report_config
from psdeploy.report.cases import LAYER_REFERENCE_CASES, Role
from psdeploy.report.config import TORCH, platform
from psdeploy.report.run import Measurement, planned
from psdeploy.search.prepare import export_case

RESULT_FIELDS = ("table", "backend", "group", "case", "batch", "role", "lowering")


def _name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


def _torch_entries(config: ReportConfig, device: str, left_out: list[str]) -> list[dict]:
    """The recipe's eager-PyTorch layer cases run.py can build from shapes alone: the plain and dilated 3x3
    convs and the released PSConv (deployed lowerings and networks need psdeploy there: left out)."""
    entries = []
    for group, cases in planned(config, platform(TORCH, config)):
        if group.table == "network":
            left_out.append(f"torch {group.label} (networks need psdeploy's modules there)")
            continue
        channels, stride = group.shape[1], int(re.search(r" s(\d+) ", group.label).group(1))  # "64@56 s2 b1"
        for module_case in cases:
            case = module_case.case
            if case.role is Role.DEPLOYED:
                left_out.append(f"torch {group.label} {case.label} (deployed lowerings need psdeploy there)")
                continue
            op = {"op": "psconv_released", "parts": 4, "dilation": 2} if case.role is Role.RELEASED else \
                {"op": "conv", "dilation": LAYER_REFERENCE_CASES[case.label][1]}
            entries.append({"name": _name("torch", group.label, case.label), "group": f"torch {group.label}",
                            "device": device, "input_shape": list(group.shape), "table": group.table,
                            "backend": TORCH, "report_group": group.label, "case": case.label, "batch": group.batch,
                            "role": case.role.value, "lowering": case.lowering,
                            "torch": {**op, "channels": channels, "stride": stride}})
    return entries


def recipe_specs(config: ReportConfig, scratch: Path) -> tuple[list[EntrySpec], list[dict], list[str]]:
    """Every TVM case of the recipe as a bundle entry, its eager-PyTorch layer cases, and what was left out."""
    specs, left_out = [], []
    for backend_name in config.backends:
        if backend_name == TORCH:
            continue
        where = platform(backend_name, config)
        if where.target is None or where.target.backend != "tvm":
            left_out.append(f"{backend_name} (not TVM: bundles carry TVM modules)")
            continue
        layout = TvmBackend().conv_layout(where.target, where.options)
        for group, cases in planned(config, where):
            for module_case in cases:
                case = module_case.case
                if case.lowering == AUTO:
                    left_out.append(f"{backend_name} {group.label} {case.label} (auto is searched on the target)")
                    continue
                onnx_path = export_case(module_case.module, group.shape, scratch)
                twin = export_case(module_case.module, (1, *group.shape[1:]), scratch) if group.batch > 1 else None
                describe = {"table": group.table, "backend": backend_name, "report_group": group.label,
                            "case": case.label, "batch": group.batch, "role": case.role.value,
                            "lowering": case.lowering, "winograd": where.options.winograd, "layout": str(layout)}
                specs.append(EntrySpec(_name(backend_name, group.label, case.label), f"{backend_name} {group.label}",
                                       onnx_path, group.shape, where.target, where.options, layout,
                                       WINOGRAD_TILES[where.options.winograd], None, describe=describe,
                                       twin_onnx=twin))
    if not specs:
        raise PsdeployError(f"{config.source}: no TVM case to bundle (its backends: {', '.join(config.backends)})")
    device = "cuda" if any(s.target.device == "cuda" for s in specs) else "cpu"
    torch_entries = _torch_entries(config, device, left_out) if TORCH in config.backends else []
    return specs, torch_entries, left_out


def report_of_results(results: dict, source: str) -> ReportData:
    """``run.py``'s results of a recipe bundle as the report ``psdeploy report`` would have written there."""
    recipe = (results.get("report") or {}).get("recipe")
    if not recipe:
        raise PsdeployError(f"{source}: results of a bundle built without --recipe; only a report recipe's bundle "
                            f"gives report tables")
    config = load_report_config(_recipe_file(recipe, source), results["environment"].get("threads"))
    left_out = list(results["report"].get("left_out", []))
    if results.get("torch_skipped"):
        left_out.append(f"torch ({results['torch_skipped']} on the server)")
    data = ReportData(config, results["environment"], left_out=left_out)
    # eager torch runs the reference itself: parity 0, as psdeploy report records its torch cases
    for a in [*results["artifacts"], *results.get("torch", [])]:
        if "stats" not in a:
            raise PsdeployError(f"{source}: {a['name']} was checked, not timed (run.py --check-only); run it again "
                                f"without --check-only")
        data.measurements.append(Measurement(
            a["table"], a["backend"], a["report_group"], a["case"], a["batch"], a["stats"], a["ratio"], a["ratio_p10"],
            a["ratio_p90"], a["parity"]["rel_err"] if a["parity"] else 0.0, role=a["role"], lowering=a["lowering"],
            load_ratios=a["load_ratios"], load_medians_ms=a["load_medians_ms"]))
    return data


def _recipe_file(recipe: dict, source: str) -> Path:
    """The recipe the bundle was built from, unchanged (its tables' shapes and names come from it)."""
    path = Path(recipe["path"])
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != recipe["sha256"]:
        raise PsdeployError(f"{source}: the bundle was built from the recipe {path}, which is "
                            f"{'changed' if path.is_file() else 'not here'}; report on the machine it was built on")
    return path
