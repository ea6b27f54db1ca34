"""Every table and line the CLI prints, rendered with rich from the API's results; no logic here."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from psdeploy.api import RunResult
from psdeploy.backends import Profile
from psdeploy.backends.tvm.tuning_db import PrunedTarget
from psdeploy.bench import BenchResult
from psdeploy.bench.paired_profile import PairedProfile
from psdeploy.bench.stats import Pooled
from psdeploy.compile import CompileResult
from psdeploy.console import console, err_console
from psdeploy.export import ExportResult, SearchRow
from psdeploy.export.inspect import Inspection
from psdeploy.report.compare import RatioChange
from psdeploy.verify.accuracy import AccuracyReport
from psdeploy.verify.images import ImageAccuracy
from psdeploy.parity.compare import ParityReport


def millions(n: int) -> str:
    return f"{n / 1e6:,.3f}M"


def giga(n: int) -> str:
    return f"{n / 1e9:,.3f}G"


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


def parity_table(report: ParityReport) -> Table:
    table = _table(f"parity: {report.candidate} vs {report.reference} (tolerance {report.tolerance:g})",
                   ("input", "seed", "output", "max abs err", "max abs ref", "rel err", "cosine", "ok"),
                   left=("input", "output"))
    for row in report.rows():
        table.add_row(
            str(row["input"]), str(row["seed"]), str(row["name"]), f"{row['max_abs_err']:.3g}",
            f"{row['max_abs_ref']:.3g}", f"{row['rel_err']:.3g}", f"{row['cosine']:.7f}",
            "[green]yes[/]" if row["ok"] else "[red]NO[/]",
        )
    return table


def search_table(rows: list[SearchRow]) -> Table:
    """--lowering auto: per layer geometry, each candidate's median and the one kept."""
    names = rows[0].lowerings
    table = _table("lowering search (median ms, interleaved with the plain 3x3 of the same shape)",
                   ("layer geometry", "layers", "plain 3x3", *names, "kept", "ratio to plain"),
                   left=("layer geometry", "kept"))
    for row in rows:
        t = row.timings_ms
        table.add_row(row.geometry, str(len(row.layers)), f"{t['plain']:.3f}", *(f"{t[n]:.3f}" for n in names),
                      row.lowering, f"{row.ratio_to_plain:.3f}x")
    return table


def _unmasked(resnext: bool) -> str:
    """Why a checkpoint's layers hold kernels its design masks: PS-ResNeXt's release has a known mask bug;
    a PS-ResNet has none, so its checkpoint was trained without the mask."""
    why = ("as PS-ResNeXt's released PSGConv2d leaves them: its mask indexes (i + j * groups) where "
           "(i + j * parts) was meant" if resnext else
           "which the released PS-ResNet code zeroes at init and keeps at zero while training (PS-ResNet's "
           "mask has no bug): this checkpoint was trained without that mask")
    return (f"The others hold non-zero 'masked' kernels, {why}; their exact function keeps the dense dilation-1 "
            f"conv of each group (1.5x for those layers).")


def show_inspection(source: str, info: Inspection) -> None:
    loaded = info.loaded
    head = "backbone (C2..C5 outputs)" if loaded.config.num_classes is None else f"{loaded.config.num_classes} classes"
    console.print(f"[bold]{source}[/]  sha256 {loaded.sha256[:16]}…")
    console.print(f"architecture: [bold]{loaded.arch}[/] ({head}); {'; '.join(loaded.notes) or 'bare state dict'}")
    if info.layers:
        table = _table("PSConv layers (blocks: card x out part x in part; rates d1/d2/d4)",
                       ("layer (checkpoint)", "in exports and profiles", "C", "stride", "groups",
                        "off-design non-zero blocks", "deployed as", "shuffles"),
                       left=("layer (checkpoint)", "in exports and profiles", "off-design non-zero blocks",
                             "deployed as"))
        for layer in info.layers:
            off = ", ".join(f"d{d}:{n}" for d, n in layer.off_design.items() if n) or "none"
            table.add_row(f"{layer.name}.conv2", layer.deployed_name, str(layer.channels), str(layer.stride),
                          str(layer.groups), off, " + ".join(map(str, layer.stats.convs)), str(layer.stats.shuffles))
        console.print(table)
        clean = sum(layer.clean for layer in info.layers)
        console.print(f"{clean}/{len(info.layers)} layers clean: masked blocks really zero, deployed at 1.0x.")
        if clean < len(info.layers):
            console.print(_unmasked(loaded.config.groups > 1))
    counts = _table(f"counts per sample at {'x'.join(map(str, info.input_shape))}", ("form", "params", "MACs"),
                    left=("form",))
    counts.add_row("checkpoint as released", millions(info.released[0]), giga(info.released[1]))
    counts.add_row("deployed (BN folded)", millions(info.deployed[0]), giga(info.deployed[1]))
    counts.add_row("plain counterpart, deployed the same way", millions(info.plain_deployed[0]),
                   giga(info.plain_deployed[1]))
    console.print(counts)


def show_export(result: ExportResult, arch: str, opset: int) -> None:
    console.print(parity_table(result.rewrite_parity))
    console.print(parity_table(result.onnx_parity))
    g = result.graph
    table = _table("counts per sample", ("form", "params", "conv MACs", "all MACs", "gathers", "elements moved"),
                   left=("form",))
    table.add_row("checkpoint as released (torch)", millions(result.released_params), "", giga(result.released_macs),
                  "", "")
    table.add_row("exported graph (counted from ONNX)", millions(g.params), giga(g.conv_macs), giga(g.macs),
                  str(g.gathers), f"{g.moved_elements:,}")
    console.print(table)
    if result.search:
        console.print(search_table(result.search))
    console.print("graph ops: " + ", ".join(f"{op} {n}" for op, n in g.ops.most_common()))
    console.print(f"[green]wrote[/] {result.path} ({arch}, lowering {result.deploy.lowering}, opset {opset})")


def show_compile(result: CompileResult) -> None:
    m = result.manifest
    if t := m.tuning:
        console.print(f"tuning: {t.tasks} tasks: {t.tasks_tuned} to tune now ({t.tasks_measured} of them "
                      f"measured), {t.tasks_already_tuned} already in the database; {t.trials_measured} trials "
                      f"measured; db {t.database}")
        if t.trials_measured:
            phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in t.phase_s.items())
            threads = f" at {t.measured_threads} TVM threads" if t.measured_threads else ""
            console.print(f"tuning throughput: {t.trials_per_min:.1f} trials/min ({t.trials_measured} in "
                          f"{t.tuning_s:.0f} s, batches of {t.batch}, measured {t.measured_on}{threads}, "
                          f"stopped by {t.stopped_by}); {phases}")
        if t.tasks_all_failed:
            err_console.print(f"[bold yellow]WARNING: every candidate measured failed for "
                              f"{len(t.tasks_all_failed)} task(s): {', '.join(t.tasks_all_failed)} "
                              f"(they build with MetaSchedule's untuned fallback; -v shows its errors)[/]")
        for note in t.notes:
            console.print(f"tuning-db: {note}")
        if untuned := t.tasks - t.tasks_tuned - t.tasks_already_tuned:
            err_console.print(f"[bold yellow]WARNING: {untuned} of {t.tasks} tasks have no record in the tuning "
                              f"database and were built UNTUNED, as --untuned asked: many times slower than "
                              f"onnxruntime on CPU; give a --tune-time budget, or the --tuning-db tuned for this "
                              f"CPU, to build them tuned[/]")
    if m.lowering_search:
        console.print(search_table(m.lowering_search))
    if q := m.quantization:
        left = f"; fp32: {', '.join(q.float_convs)}" if q.float_convs else ""
        console.print(f"int8 ({q.tool}): {q.convs_int8} of {q.convs} convs run int8{left}")
    if g := m.gate:
        agreement = f", top-1 agreement {g.top1_agreement:.4f}" if g.top1_agreement is not None else ""
        console.print(f"{m.precision} gate vs fp32 on {g.samples} held-out samples of {g.data}: mean cosine "
                      f"{g.mean_cosine:.4f} (min {g.min_cosine:.4f}){agreement} [green]passed[/]")
    if m.accuracy and m.gate:
        a = m.accuracy
        console.print(f"held-out top-1: checkpoint {a['checkpoint_top1']:.4f}, {m.precision} artifact {a['artifact_top1']:.4f} "
                      f"(agreement {a['prediction_agreement']:.4f})")
    if result.parity is not None:
        console.print(parity_table(result.parity))
    elif not result.ran:
        err_console.print(f"[bold yellow]built but NOT run ({m.parity['status']}): run 'psdeploy verify' on "
                          f"the machine it is for[/]")
    console.print(f"[green]wrote[/] {result.output} ({m.backend} {m.target}, {m.arch}, lowering {m.lowering}"
                  f"{', layout ' + m.layout if m.layout else ''}{', winograd ' + m.winograd if m.winograd != 'off' else ''})")


def show_accuracy(report: AccuracyReport, description: str) -> None:
    console.print(f"held-out top-1 over {report.samples} images: checkpoint (torch) {report.reference_top1:.4f}, "
                  f"{description} {report.candidate_top1:.4f}; argmax agreement {report.prediction_agreement:.4f}")


NAMED_DISAGREEMENTS = 5  # on the terminal; --json lists them all


def show_image_accuracy(result: ImageAccuracy) -> None:
    """Checkpoint and artifact side by side on the user's images: top-1/top-5, or per-output agreement."""
    console.print(f"data: {result.data}", soft_wrap=True)
    console.print(f"preprocessing: {result.preprocess.describe()}", soft_wrap=True)
    if result.checkpoint_topk and result.artifact_topk:
        table = _table(f"accuracy on {result.images} images", ("model", "top-1", "top-5"), left=("model",))
        for name, topk in (("checkpoint (torch)", result.checkpoint_topk), (result.artifact, result.artifact_topk)):
            table.add_row(name, f"{topk.top1:.4f}", f"{topk.top5:.4f}")
        console.print(table)
        differ = len(result.disagreements)
        colour = "green" if not differ else "yellow"
        console.print(f"[{colour}]top-1 agreement {result.agreement:.4f}[/]: the top-1 class differs on {differ} of "
                      f"{result.images} images")
        for d in result.disagreements[:NAMED_DISAGREEMENTS]:
            console.print(f"  {d.file}: label {d.label}, checkpoint {d.checkpoint_top5[0]} (top-5 "
                          f"{d.checkpoint_top5}), artifact {d.artifact_top5[0]} (top-5 {d.artifact_top5})",
                          soft_wrap=True, highlight=False)
        if differ > NAMED_DISAGREEMENTS:
            console.print(f"  ... and {differ - NAMED_DISAGREEMENTS} more (--json lists them all)")
    else:
        table = _table(f"backbone outputs on {result.images} images: {result.artifact} vs checkpoint (torch)",
                       ("output", "mean cosine", "min cosine", "max rel err"), left=("output",))
        for o in result.outputs:
            table.add_row(o.name, f"{o.mean_cosine:.7f}", f"{o.min_cosine:.7f}", f"{o.max_rel_err:.3g}")
        console.print(table)
    if result.skipped:
        count = f"{len(result.skipped)} bad file{'s' if len(result.skipped) != 1 else ''}"
        console.print(f"[yellow]skipped {count}[/] (--skip-bad): " + "; ".join(
            f"{f}: {r}" for f, r in result.skipped[:3]) + (" ..." if len(result.skipped) > 3 else ""), soft_wrap=True)
    console.print(f"{result.images} images in {result.seconds:.1f} s: {result.images_per_s:.1f} images/s "
                  f"(decoding and preprocessing in parallel with both models' inference)")


def show_run(result: RunResult) -> None:
    import numpy as np

    if result.random_input:
        console.print(f"random input {result.input.shape} (seed 0)")
    for name, out in zip(result.runner.output_names, result.outputs):
        if name == "logits":
            console.print(f"{name} {out.shape}: top-5 classes (score)")
            for n, scores in enumerate(out):
                top = np.argsort(-scores)[:5]
                console.print(f"  sample {n} of {len(out)}: " + ", ".join(f"{int(i)} ({scores[i]:.3f})" for i in top))
        else:
            console.print(f"{name} {out.shape}: mean {out.mean():.4g}, std {out.std():.4g}, max {out.max():.4g}")


def _modes(pooled: Pooled) -> str:
    if not pooled.load_dependent:
        return f"one ({len(pooled.load_medians_ms)} loads)"
    return "[red]" + ", ".join(f"{m.median_ms:.2f} ms x{m.loads}" for m in pooled.modes) + "[/]"


def show_bench(result: BenchResult, threads: int | None) -> None:
    shown = f"threads {threads}" if threads else "each runtime's default threads (see 'runs on')"
    table = _table(f"latency (ms), {result.plan.iterations} interleaved rounds over {result.loads} loads, {shown}",
                   ("model", "runs on", "batch", "median", "p90", "min", "CV%", "img/s",
                    "ratio to first (p10-p90)", "per load", "speed modes"), left=("model", "runs on"))
    table.columns[0].min_width = max(len(row.name) for row in result.rows)  # a name is never cut to fit the width
    for row in result.rows:
        s, p = row.stats, row.pooled
        cv = f"[red]{s.cv_pct:.1f} noisy[/]" if s.noisy else f"{s.cv_pct:.1f}"
        band = f"{p.ratio:.3f} ({p.ratio_band[0]:.3f}-{p.ratio_band[1]:.3f})"
        per_load = f"{min(p.load_ratios):.3f}-{max(p.load_ratios):.3f}"
        table.add_row(row.name, row.runs_on, str(row.batch), f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}",
                      f"{s.min_ms:.3f}", cv, f"{row.batch * 1e3 / s.median_ms:.1f}", band, per_load, _modes(p))
    console.print(table)
    for row in (r for r in result.rows if r.pooled.load_dependent):
        err_console.print(f"[bold yellow]WARNING: {row.name} (batch {row.batch}) ran at {len(row.pooled.modes)} "
                          f"speeds depending on the load ({_modes(row.pooled)}); its pooled figures mix them[/]")
    env = result.environment
    console.print(f"{env['cpu_model']} ({env['cpu_flags']}), {env['cores']} cores, governor {env['governor']}, "
                  f"gpu {env['gpu']}")


def _reorders(profile: Profile) -> str:
    count, ms = profile.layout_reorders
    return f"{count:g} layout reorders, {ms:.3f} ms"


def show_profile(profile: Profile, top: int) -> None:
    for title, shown in ((f"{Path(profile.model).name} on {profile.runs_on}, batch {profile.batch}: time per "
                          f"operator type and kernel, ms per run ({profile.runs} runs)", profile.by_op_type()),
                         (f"slowest {top} nodes", profile.nodes[:top])):
        table = _table(title, ("name", "op", "kernel", "ms/run", "calls/run", "share"), left=("name", "op", "kernel"))
        for r in shown:
            table.add_row(r.name, r.op_type, r.kernel, f"{r.ms_per_run:.3f}", f"{r.calls_per_run:g}",
                          f"{100 * r.share:.1f}%")
        console.print(table)
    console.print(f"total {profile.total_ms:.3f} ms per run; {_reorders(profile)}")


CONV_SPEED_TARGET = 0.8  # every conv at 80% of the fastest runtime's speed for it, at least


def show_profile_against(pair: PairedProfile) -> None:
    """Two models profiled the same way, per operator type: where the first one's extra time goes."""
    profile, other = pair.first, pair.other
    a, b = Path(profile.model).name, Path(other.model).name
    mine = {r.op_type: r for r in profile.by_op_type(split_kernels=False)}
    theirs = {r.op_type: r for r in other.by_op_type(split_kernels=False)}
    table = _table(f"{a} vs {b} on {profile.runs_on}, ms per run (nodes per run), median of {pair.rounds} "
                   f"alternating rounds", ("op", a, b, f"{a} - {b}"), left=("op",))
    for op in sorted(set(mine) | set(theirs), key=lambda o: -(mine[o].ms_per_run if o in mine else 0)):
        x, y = mine.get(op), theirs.get(op)
        ms_x, ms_y = (x.ms_per_run if x else 0.0), (y.ms_per_run if y else 0.0)
        table.add_row(op, f"{ms_x:.3f} ({x.calls_per_run:g})" if x else "-",
                      f"{ms_y:.3f} ({y.calls_per_run:g})" if y else "-", f"{ms_x - ms_y:+.3f}")
    table.add_row("total", f"{profile.total_ms:.3f}", f"{other.total_ms:.3f}",
                  f"{profile.total_ms - other.total_ms:+.3f}")
    console.print(table)
    ratio, lo, hi = pair.total_ratio
    console.print(f"{a} / {b} profiled time {ratio:.3f}x ({lo:.3f}-{hi:.3f}, per round); {a}: {_reorders(profile)}; "
                  f"{b}: {_reorders(other)}")


def show_convs(pair: PairedProfile) -> None:
    """Conv by conv (the same conv on both, by what it computes): median time and GFLOP/s over the rounds, and
    the first's share of the second's speed per round (median, p10-p90); convs below 80% of it are counted (the
    target every conv should reach)."""
    a, b = Path(pair.first.model).name, Path(pair.other.model).name
    table = _table(f"convs: {a} on {pair.first.runs_on} vs {b} on {pair.other.runs_on}, per run, median of "
                   f"{pair.rounds} rounds", ("conv (out@HxW, MACs per output)", "calls", f"{a} ms", "GFLOP/s",
                                             f"{b} ms", "GFLOP/s", f"speed of {b} (p10-p90)"),
                   left=("conv (out@HxW, MACs per output)",))
    for row in pair.convs:
        x, y = row.mine, row.theirs
        share = f"{row.share:.0%} ({row.band[0]:.0%}-{row.band[1]:.0%})" if row.share is not None else "-"
        table.add_row(str(x.key), f"{x.calls_per_run:g}", f"{x.ms_per_run:.3f}", f"{x.gflops:.1f}",
                      f"{y.ms_per_run:.3f}" if y else "-", f"{y.gflops:.1f}" if y else "-", share)
    slow = sum(row.share is not None and row.share < CONV_SPEED_TARGET for row in pair.convs)
    console.print(table)
    mine_ms, theirs_ms = sum(x.ms_per_run for x in pair.first.convs), sum(t.ms_per_run for t in pair.other.convs)
    console.print(f"{slow} of {len(pair.convs)} convs below {CONV_SPEED_TARGET:.0%} of {b}'s speed (median); "
                  f"convs {mine_ms:.3f} ms vs {theirs_ms:.3f} ms")


def _layer_order(layer: str) -> tuple:
    """Network order: stem first, then stages by number, '(runtime)' last."""
    return (layer == "(runtime)", [int(p) if p.isdigit() else p for p in layer.split(".")])


def show_layers(profile: Profile, other: Profile | None = None) -> None:
    """Time per network layer; with a second model (the plain ResNet), layer by layer with the ratio, so a
    PSConv layer (``conv2``) stands beside the plain 3x3 it replaces."""
    a = Path(profile.model).name
    mine = {r.name: r for r in profile.by_layer()}
    theirs = {r.name: r for r in other.by_layer()} if other else {}
    columns = ("layer", "ops", a) + ((Path(other.model).name, "ratio") if other else ())
    table = _table(f"{a} on {profile.runs_on}, ms per run per layer", columns, left=("layer", "ops"))
    for layer in sorted(set(mine) | set(theirs), key=_layer_order):
        x, y = mine.get(layer), theirs.get(layer)
        row = [layer, x.op_type if x else "-", f"{x.ms_per_run:.3f}" if x else "-"]
        if other:
            ratio = f"{x.ms_per_run / y.ms_per_run:.2f}x" if x and y and y.ms_per_run > 0 else "-"
            row += [f"{y.ms_per_run:.3f}" if y else "-", ratio]
        table.add_row(*row)
    console.print(table)
    psconv = [(n, r.ms_per_run, theirs[n].ms_per_run) for n, r in mine.items()
              if n.endswith(".conv2") and n in theirs and theirs[n].ms_per_run > 0]
    if psconv:
        worst = max(psconv, key=lambda t: t[1] / t[2])
        console.print(f"3x3 layers (conv2): {sum(t[1] for t in psconv):.3f} vs {sum(t[2] for t in psconv):.3f} ms "
                      f"({sum(t[1] for t in psconv) / sum(t[2] for t in psconv):.3f}x); worst {worst[0]} "
                      f"{worst[1] / worst[2]:.2f}x")


def show_report(paths: list[Path], changes: list[RatioChange]) -> None:
    console.print(f"[green]wrote[/] {', '.join(str(p) for p in paths)}")
    for c in changes:
        mark = "[red]WORSE[/]" if c.worse else "ok"
        console.print(f"{mark:>5}  {c.key}: {c.old:.3f}x -> {c.new:.3f}x")
    worse = sum(c.worse for c in changes)
    if worse:
        err_console.print(f"[red]{worse} ratio(s) got worse beyond the recorded spread[/]")


def show_pruned(targets: list[PrunedTarget], output: str) -> None:
    table = _table("pruned tuning database", ("target", "records", "kept (best per workload)", "size"),
                   left=("target",))
    for t in targets:
        table.add_row(t.key, str(t.records_before), str(t.records_after), f"{t.bytes_after / 1e6:.2f} MB")
    console.print(table)
    console.print(f"[green]wrote[/] {output}")


def show_bundle(result) -> None:
    """What the bundle holds, what takes its size, and the one command that runs it."""
    table = _table(f"bundle {result.output}", ("module", "device", "input", "weights", "tuned tasks"),
                   left=("module", "device"))
    for e in result.manifest["artifacts"]:
        weights = "regenerated there" if "regenerate" in e["weights"] else "shipped, sha256 checked"
        table.add_row(e["name"], e["target"], "x".join(map(str, e["input_shape"])), weights, e["tuned_tasks"])
    console.print(table)
    console.print(f"size {result.total_bytes / 2**20:.1f} MiB: " +
                  ", ".join(f"{what} {size / 2**20:.1f} MiB" for what, size in result.sizes))
    console.print(f"[green]wrote[/] {result.output}; on the server: python{result.manifest['python']} "
                  f"{result.output}/run.py --json results.json")
