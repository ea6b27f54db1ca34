"""Report outputs: Markdown (with the paper's figures beside ours), JSON, CSV and a PNG chart."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from psdeploy.bench.stats import MODE_GAP_PCT, NOISY_CV_PCT
from psdeploy.fileio import atomic_output
from psdeploy.report.cases import Role
from psdeploy.report.run import SCHEMA, Measurement, ReportData
from psdeploy.verify.gate import SYNTHETIC_SAMPLES

# The paper's anchors (Sec. 4.2 "Speed Benchmark", Appendix G), as ratios to the plain baseline.
PAPER = {
    "layer": {
        "dilated2": "2.99x (Titan X, cuDNN 7, N=200 64@56)",
        "psconv_released": "3.41x (1.14x the dilated conv; same setting)",
        "psconv_deployed": "~1.42x (Dilated-Winograd + TVM + oneDNN)",
    },
    "network": {"deployed": "1.066x GPU / 1.051x CPU (dual Xeon 8280)"},
}


def to_json(data: ReportData) -> dict[str, object]:
    cfg = {**asdict(data.config), "gate": data.config.gate.model_dump()}
    return {"schema": SCHEMA, "created": data.created, "config": cfg, "environment": data.environment,
            "noisy_cv_pct": NOISY_CV_PCT, "left_out": data.left_out,
            "measurements": [{**asdict(m), "images_per_s": m.images_per_s} for m in data.measurements]}


CSV_FIELDS = ("table", "backend", "precision", "group", "case", "batch", "median_ms", "p90_ms", "p99_ms", "min_ms",
              "mean_ms", "cv_pct", "noisy", "iterations", "ratio", "ratio_p10", "ratio_p90", "images_per_s",
              "parity_rel_err", "mean_cosine", "int8_convs")


def to_csv(data: ReportData) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS)
    writer.writeheader()
    for m in data.measurements:
        row = {**m.stats, **{k: getattr(m, k) for k in ("table", "backend", "precision", "group", "case", "batch",
                                                         "ratio", "ratio_p10", "ratio_p90", "parity_rel_err",
                                                         "mean_cosine", "int8_convs")}}
        row["images_per_s"] = m.images_per_s
        writer.writerow({k: row[k] for k in CSV_FIELDS})
    return out.getvalue()


def _paper_for(m: Measurement) -> str:
    if m.table == "network":
        return PAPER["network"]["deployed"] if m.role == Role.DEPLOYED.value else ""
    key = {Role.DEPLOYED.value: "psconv_deployed", Role.RELEASED.value: "psconv_released"}.get(m.role, m.case)
    return PAPER["layer"].get(key, "")


def _checked(m: Measurement) -> str:
    """fp32: parity's max|err|/max|ref|; reduced precision: the accuracy gate's mean cosine."""
    if m.mean_cosine is None:
        return f"{m.parity_rel_err:.1e}"
    return f"cos {m.mean_cosine:.4f}" + (f", {m.int8_convs} convs int8" if m.int8_convs else "")


def _fmt(m: Measurement) -> list[str]:
    s = m.stats
    cv = f"{s['cv_pct']:.1f}" + (" **noisy**" if s["noisy"] else "")
    case = f"{m.case}: {m.chosen}" if m.chosen else m.case
    return [case, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['min_ms']:.3f}", cv,
            f"**{m.ratio:.3f}x** ({m.ratio_p10:.2f}-{m.ratio_p90:.2f})", _per_load(m), f"{m.images_per_s:.1f}",
            _checked(m), _paper_for(m)]


def _per_load(m: Measurement) -> str:
    """Each load's ratio, lowest-highest; a case whose loads ran at several speeds shows each and how many."""
    spread = f"{min(m.load_ratios):.2f}-{max(m.load_ratios):.2f}"
    if len(m.modes) == 1:
        return spread
    return spread + " **speeds " + ", ".join(f"{mode.median_ms:.2f} ms x{mode.loads}" for mode in m.modes) + "**"


def _precision_lines(data: ReportData) -> list[str]:
    """What precisions the figures are in, how reduced ones were checked, and the pairs not built."""
    cfg = data.config
    if cfg.precisions == ["f32"]:
        return ["All figures fp32."]
    gate = cfg.gate
    lines = [f"Precisions: {', '.join(cfg.precisions)}; within a group the plain baseline and PSConv share one. "
             f"Reduced-precision cases were checked by the accuracy gate instead of fp32 parity, on "
             f"{SYNTHETIC_SAMPLES} synthetic image-like inputs of the case's shape (int8 calibrated on three quarters, "
             f"the gate run on the held-out quarter): mean cosine to the torch reference >= {gate.min_cosine:g} "
             f"(top-1 agreement >= {gate.min_agreement:g} where the output is class scores); the parity column shows "
             f"that cosine."]
    if data.left_out:
        lines.append(f"Not timed: {', '.join(data.left_out)}.")
    return lines


def to_markdown(data: ReportData) -> str:
    env, cfg = data.environment, data.config
    lines = [
        f"# PSConv latency report: {cfg.name}",
        "",
        f"Created {data.created} from `{cfg.source}`. Schema `{SCHEMA}`. " + " ".join(_precision_lines(data)),
        "",
        f"Each group's cases ran in {cfg.loads} loads (each case opened anew), **interleaved** within each "
        "(round-robin, rotating order; each turn one untimed run, then two timed); the ratio is the median of "
        "per-round ratios over every load to the group's first case (plain conv / plain ResNet), with its p10-p90 "
        "band, and each load's own ratio beside it (per load); a case whose loads ran at speeds more than "
        f"{MODE_GAP_PCT:.0f}% apart lists them. Warm-up until stable (>= {cfg.warmup} rounds, <= {cfg.max_warmup}) in "
        f"each load, then {cfg.iters} timed rounds in all. "
        f"CV above {NOISY_CV_PCT:.0f}% is marked **noisy**. Every case was checked against its PyTorch "
        "reference on the same backend before timing (max|err|/max|ref| column).",
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu_model']} ({env['cpu_flags']}); {env['cores']} cores; governor {env['governor']}",
        f"- threads: {cfg.threads} (pinned for every backend); GPU: {env['gpu']}",
        f"- {env['os']}, Python {env['python']}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        "",
    ]
    header = ["case", "median ms", "p90", "p99", "min", "CV%", "ratio (p10-p90)", "per load", "img/s", "parity",
              "paper"]
    by_table: dict[str, dict[tuple[str, str], list[Measurement]]] = defaultdict(lambda: defaultdict(list))
    for m in data.measurements:
        by_table[m.table][(f"{m.backend} {m.precision}", m.group)].append(m)
    titles = {"layer": "Layer table (3x3, C in = C out; ratio to the plain 3x3 of the same backend)",
              "network": "Network table (ratio to the plain ResNet deployed on the same backend)"}
    for table in ("layer", "network"):
        if table not in by_table:
            continue
        lines += [f"## {titles[table]}", ""]
        for (backend, group), rows in by_table[table].items():
            lines += [f"### {backend}: {group}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_fmt(m)) + " |" for m in rows]
            lines.append("")
    lines += ["## Summary of ratios", "", "| backend, precision | group | PSConv deployed / plain | PSConv released / plain |",
              "|---|---|---|---|"]
    for (backend, group), rows in {**by_table.get("layer", {}), **by_table.get("network", {})}.items():
        dep = [m for m in rows if m.role == Role.DEPLOYED.value]
        rel = [m for m in rows if m.role == Role.RELEASED.value]
        lines.append(f"| {backend} | {group} | " + ", ".join(f"{m.lowering}{f' ({m.chosen})' if m.chosen else ''} {m.ratio:.3f}x" for m in dep) + " | "
                     + ", ".join(f"{m.ratio:.3f}x" for m in rel) + " |")
    lines.append("")
    return "\n".join(lines)


def to_png(data: ReportData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in data.measurements if m.ratio and m.role != Role.PLAIN.value]
    labels = [f"{m.backend} {m.precision}\n{m.group}\n{m.case}" for m in shown]
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(shown)), 5.5))
    colors = [{Role.DEPLOYED.value: "tab:green", Role.RELEASED.value: "tab:red"}.get(m.role, "tab:gray")
              for m in shown]
    ax.bar(range(len(shown)), [m.ratio for m in shown], color=colors,
           yerr=[[m.ratio - m.ratio_p10 for m in shown], [m.ratio_p90 - m.ratio for m in shown]], capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.42, color="tab:blue", linestyle="--", linewidth=0.8, label="paper: PSConv layer 1.42x")
    ax.axhline(1.05, color="tab:purple", linestyle=":", linewidth=0.8, label="paper: network 1.05x (CPU)")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_ylabel("latency ratio to plain (same backend)")
    ax.set_title(f"{data.config.name}: green deployed, red released, grey dilated")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer_psconv(data: ReportData) -> list[Measurement]:
    return [m for m in data.measurements
            if m.table == "layer" and m.role in (Role.DEPLOYED.value, Role.RELEASED.value)]


def to_layer_png(data: ReportData, path: Path) -> None:
    """Ratio to the plain 3x3 vs layer shape, one line per backend and PSConv form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = _layer_psconv(data)
    groups = list(dict.fromkeys(m.group for m in layer))
    series: dict[str, dict[str, float]] = defaultdict(dict)
    for m in layer:
        series[f"{m.backend} {m.precision}: {m.lowering or m.role}"][m.group] = m.ratio
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(groups)), 5))
    for label, values in series.items():
        xs = [i for i, g in enumerate(groups) if g in values]
        ax.plot(xs, [values[groups[i]] for i in xs], marker="o", linestyle="--" if "released" in label else "-",
                label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.15, color="tab:green", linestyle=":", linewidth=0.8, label="goal: 1.15x")
    ax.axhline(1.42, color="tab:blue", linestyle=":", linewidth=0.8, label="paper: 1.42x")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("PSConv / plain 3x3 (same backend)")
    ax.set_title(f"{data.config.name}: PSConv layer ratio by shape")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(data: ReportData, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Write report.md/.json/.csv and the charts into ``out_dir``, the folder whole or not at all (an existing
    one refused unless ``force``, then replaced)."""
    names = ["report.md", "report.json", "report.csv", "ratios.png"]
    with atomic_output(out_dir, "-o", directory=True, force=force) as stage:
        for name, content in (("report.md", to_markdown(data)), ("report.json", json.dumps(to_json(data), indent=1)),
                              ("report.csv", to_csv(data))):
            (stage / name).write_text(content)
        to_png(data, stage / "ratios.png")
        if _layer_psconv(data):
            to_layer_png(data, stage / "ratio_vs_layer.png")
            names.append("ratio_vs_layer.png")
    return [out_dir / name for name in names]
