"""``psdeploy``: a thin click layer over the API. Errors become one line and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from psdeploy.console import console, err_console, giga, millions, parity_table, search_table
from psdeploy.errors import PsdeployError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PsdeployError as exc:
            err_console.print(f"[red]error:[/] {exc}", soft_wrap=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group)
@click.version_option(package_name="psdeploy")
def main() -> None:
    """Deploy PS-ResNet / PS-ResNeXt: load, rewrite, export, compile, verify, benchmark."""


ARCH_OPTION = click.option("--arch", default=None, help="Architecture name (default: detected from the keys).")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@ARCH_OPTION
def inspect(checkpoint: str, arch: str | None) -> None:
    """Architecture, every PSConv layer, and released-vs-deployed parameters/MACs."""
    from psdeploy.inspect import inspect_model
    from psdeploy.load import load_model

    loaded = load_model(checkpoint, arch)
    info = inspect_model(loaded)
    head = "backbone (C2..C5 outputs)" if loaded.config.num_classes is None else f"{loaded.config.num_classes} classes"
    console.print(f"[bold]{checkpoint}[/]  sha256 {loaded.sha256[:16]}…")
    console.print(f"architecture: [bold]{loaded.arch}[/] ({head}); {'; '.join(loaded.notes) or 'bare state dict'}")
    if info.layers:
        table = Table(title="PSConv layers (blocks: card x out part x in part; rates d1/d2/d4)")
        for col in ("layer", "C", "stride", "groups", "off-design non-zero blocks", "deployed as", "shuffles"):
            table.add_column(col)
        for layer in info.layers:
            off = ", ".join(f"d{d}:{n}" for d, n in layer.off_design.items() if n) or "none"
            table.add_row(layer.name, str(layer.channels), str(layer.stride), str(layer.groups), off,
                          " + ".join(layer.stats.convs), str(layer.stats.shuffles))
        console.print(table)
        clean = sum(layer.clean for layer in info.layers)
        console.print(f"{clean}/{len(info.layers)} layers clean: masked blocks really zero, deployed at 1.0x.")
        if clean < len(info.layers):
            console.print("The others hold non-zero 'masked' kernels (the PSGConv2d mask bug); their exact "
                          "function keeps the dense dilation-1 conv of each group (1.5x for those layers).")
    counts = Table(title=f"counts per sample at {'x'.join(map(str, info.input_shape))}")
    for col in ("form", "params", "MACs"):
        counts.add_column(col)
    counts.add_row("checkpoint as released", millions(info.released[0]), giga(info.released[1]))
    counts.add_row("deployed (BN folded)", millions(info.deployed[0]), giga(info.deployed[1]))
    counts.add_row("plain counterpart, deployed the same way", millions(info.plain_deployed[0]),
                   giga(info.plain_deployed[1]))
    console.print(counts)


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@ARCH_OPTION
@click.option("--input-shape", default=None, help="N,C,H,W (default: 1,3,224,224; 1,3,32,32 for the digits models).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option("--lowering", default="grouped", show_default=True,
              help="reference (released form, unfolded), grouped, polyphase, fused (one PSConv node per "
                   "layer, for TVM), or auto (fastest per layer geometry, timed in onnxruntime).")
@click.option("--tolerance", default=1e-4, show_default=True, type=float, help="max|err|/max|ref| allowed.")
def export(checkpoint: str, output: str, arch: str | None, input_shape: str | None, dynamic_batch: bool,
           opset: int, lowering: str, tolerance: float) -> None:
    """Rewrite, export ONNX and verify it in onnxruntime against the checkpoint."""
    from psdeploy.export import export_onnx, parse_shape
    from psdeploy.load import load_model

    loaded = load_model(checkpoint, arch)
    with console.status(f"rewriting ({lowering}), exporting and verifying {loaded.arch}…"):
        result = export_onnx(loaded, output, lowering, parse_shape(input_shape, loaded), opset, dynamic_batch,
                             tolerance)
    console.print(parity_table(result.rewrite_parity))
    console.print(parity_table(result.onnx_parity))
    g = result.graph
    table = Table(title="counts per sample")
    for col in ("form", "params", "conv MACs", "all MACs", "gathers", "elements moved"):
        table.add_column(col)
    table.add_row("checkpoint as released (torch)", millions(result.released_params), "", giga(result.released_macs),
                  "", "")
    table.add_row("exported graph (counted from ONNX)", millions(g.params), giga(g.conv_macs), giga(g.macs),
                  str(g.gathers), f"{g.moved_elements:,}")
    console.print(table)
    if result.search:
        console.print(search_table(result.search))
    ops = ", ".join(f"{op} {n}" for op, n in g.ops.most_common())
    console.print(f"graph ops: {ops}")
    console.print(f"[green]wrote[/] {Path(output)} ({loaded.arch}, lowering {lowering}, opset {opset})")


@main.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--against", "checkpoint", required=True, help="The checkpoint the artifact came from.")
@ARCH_OPTION
def accuracy(model: str, checkpoint: str, arch: str | None) -> None:
    """Held-out top-1 on the digits demo split: checkpoint (PyTorch) vs ONNX file or compiled artifact."""
    from psdeploy.load import load_model
    from psdeploy.runtime import open_runner
    from psdeploy.verify.accuracy import held_out_top1
    from psdeploy.verify.runners import torch_runner

    loaded = load_model(checkpoint, arch)
    runner = open_runner(model)
    with console.status("evaluating the held-out split…"):
        report = held_out_top1(torch_runner(loaded.model), runner.run, runner.batch)
    console.print(f"held-out top-1 over {report.samples} images: checkpoint (torch) {report.reference_top1:.4f}, "
                  f"{runner.description} {report.candidate_top1:.4f}; argmax agreement {report.prediction_agreement:.4f}")
    if not report.agree:
        raise PsdeployError(f"{model}: top-1 differs from the checkpoint's ({report.candidate_top1:.4f} vs "
                            f"{report.reference_top1:.4f})")
    console.print("[green]top-1 agrees[/]")


@main.command(name="compile")
@click.argument("source", required=False)
@click.option("--recipe", type=click.Path(dir_okay=False), help="YAML recipe; flags given here override it.")
@click.option("--target", default=None, help="llvm, cuda, openvino-cpu, or a TVM JSON target dict.")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False), help="Artifact directory.")
@ARCH_OPTION
@click.option("--input-shape", default=None, help="N,C,H,W (static for TVM).")
@click.option("--lowering", default=None,
              help="PSConv lowering: grouped (default), polyphase, fused (TVM), auto (timed on the target).")
@click.option("--tune-trials", type=int, default=None, help="MetaSchedule trials in total (TVM); 0 = untuned.")
@click.option("--tuning-db", default=None, type=click.Path(file_okay=False), help="Tuning database root.")
@click.option("--mcpu", default=None, help="LLVM CPU (e.g. skylake-avx512, haswell); default: this CPU.")
@click.option("--num-cores", type=int, default=None, help="Cores the TVM llvm target assumes.")
@click.option("--cuda-arch", default=None, help="CUDA arch for --target cuda (default sm_90).")
@click.option("--precision", default=None, type=click.Choice(["f32", "f16", "bf16"]), help="OpenVINO precision.")
@click.option("--winograd", default=None, type=click.Choice(["off", "f2", "f4"]),
              help="TVM: Winograd F(2x2,3x3)/F(4x4,3x3) for every stride-1 dense 3x3 conv (default off).")
@click.option("--tolerance", type=float, default=None, help="Parity tolerance (default 1e-4).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def compile_cmd(source, recipe, target, output, arch, input_shape, lowering, tune_trials, tuning_db, mcpu,
                num_cores, cuda_arch, precision, winograd, tolerance, force) -> None:
    """Compile a checkpoint (or psdeploy-exported ONNX) for TVM llvm/cuda or OpenVINO CPU, verified."""
    from psdeploy.compile import CompileRequest, compile_model, parse_target
    from psdeploy.recipes import Recipe, load_recipe

    r = load_recipe(recipe) if recipe else Recipe(path="", checkpoint="", target="")
    source = source or r.checkpoint
    target = target or r.target
    output = output or r.output
    for flag, value in (("SOURCE", source), ("--target", target), ("-o/--output", output)):
        if not value:
            raise PsdeployError(f"{flag} is required (on the command line or in --recipe)")
    spec = parse_target(target, mcpu or r.mcpu, num_cores or r.num_cores, cuda_arch or r.cuda_arch)
    shape = tuple(int(v) for v in input_shape.split(",")) if input_shape else r.input_shape
    request = CompileRequest(
        source=source, target=spec, output=Path(output), lowering=lowering or r.lowering, input_shape=shape,
        tune_trials=r.trials if tune_trials is None else tune_trials, tuning_db=Path(tuning_db or r.database),
        precision=precision or r.precision, winograd=winograd or r.winograd, tolerance=tolerance or r.tolerance,
        force=force, arch=arch or r.arch,
    )
    if spec.backend == "tvm" and request.tune_trials == 0:
        err_console.print("[bold yellow]WARNING: --tune-trials 0: building UNTUNED. TVM applies no schedule on "
                          "its own; expect CPU latency many times slower than onnxruntime.[/]")
    result = compile_model(request)
    m = result.manifest
    if m.tuning:
        t = m.tuning
        console.print(f"tuning: {t['tasks']} tasks, {t['tasks_tuned']} tuned now, {t['tasks_already_tuned']} "
                      f"already in the database, {t['trials_measured']} trials measured; db {t['database']}")
        for note in t["notes"]:
            console.print(f"tuning-db: {note}")
    if m.lowering_search:
        console.print(search_table(m.lowering_search))
    if result.parity is not None:
        console.print(parity_table(result.parity))
    else:
        err_console.print("[bold yellow]built but NOT run: this artifact targets CUDA and no GPU is visible "
                          "here; run 'psdeploy verify' on a GPU machine[/]")
    console.print(f"[green]wrote[/] {result.output} ({m.backend} {m.target}, {m.arch}, lowering {m.lowering}"
                  f"{', winograd ' + m.winograd if m.winograd != 'off' else ''})")


@main.command()
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--input", "input_file", type=click.Path(dir_okay=False, exists=True), help=".npy input (N,C,H,W).")
@click.option("--save-output", type=click.Path(dir_okay=False), help="Write the first output to this .npy.")
@click.option("--threads", type=int, default=None)
def run(artifact: str, input_file: str | None, save_output: str | None, threads: int | None) -> None:
    """Run an artifact (or ONNX file) on an input or a random one; print top-5 or output stats."""
    import numpy as np

    from psdeploy.runtime import open_runner
    from psdeploy.verify.parity import make_input

    runner = open_runner(artifact, threads)
    if input_file:
        x = np.load(input_file).astype(np.float32)
        expected = tuple(d for d in runner.input_shape)
        if x.ndim != 4 or any(e and e != a for e, a in zip(expected, x.shape)):
            raise PsdeployError(f"--input {input_file}: shape {x.shape}; expected {expected} (0 = any)")
    else:
        x = make_input(tuple(d or 1 for d in runner.input_shape), seed=0)
        console.print(f"random input {x.shape} (seed 0)")
    outputs = runner.run(x)
    for name, out in zip(runner.output_names, outputs):
        if name == "logits":
            top = np.argsort(-out[0])[:5]
            console.print(f"{name} {out.shape}: top-5 " + ", ".join(f"{int(i)} ({out[0, i]:.3f})" for i in top))
        else:
            console.print(f"{name} {out.shape}: mean {out.mean():.4g}, std {out.std():.4g}, max {out.max():.4g}")
    if save_output:
        tmp = save_output + ".tmp.npy"
        np.save(tmp, outputs[0])
        Path(tmp).replace(save_output)
        console.print(f"saved {save_output}")


@main.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--against", "checkpoint", required=True, help="The checkpoint the artifact was compiled from.")
@ARCH_OPTION
@click.option("--tolerance", type=float, default=1e-4, show_default=True)
def verify(artifact: str, checkpoint: str, arch: str | None, tolerance: float) -> None:
    """Parity report of an artifact against its checkpoint; non-zero exit on failure."""
    from psdeploy.compile import verify_artifact

    report = verify_artifact(Path(artifact), checkpoint, arch, tolerance)
    console.print(parity_table(report))
    report.raise_if_failed()
    console.print(f"[green]parity ok[/]: worst rel err {report.worst.rel_err:.3g}")


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise PsdeployError(f"{option} {text!r}: expected positive integers separated by commas, e.g. 1,8")
    return values


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--warmup", default=20, show_default=True, type=int, help="Minimum warm-up rounds.")
@click.option("--iters", default=100, show_default=True, type=int, help="Timed rounds (>= 30).")
@click.option("--threads", default=None, type=int, help="Intra-op threads (default: all cores).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def bench(models: tuple[str, ...], batch: str, warmup: int, iters: int, threads: int | None,
          json_out: str | None) -> None:
    """Latency of one or more ONNX files / artifacts, interleaved round-robin; ratios to the first."""
    import json
    import os

    from rich.progress import Progress

    from psdeploy.bench import bench_models
    from psdeploy.bench.timing import TimingPlan

    if iters < 30:
        raise PsdeployError(f"--iters {iters}: at least 30 timed rounds are needed for a median and p90")
    plan = TimingPlan(warmup=warmup, max_warmup=max(5 * warmup, 50), iterations=iters)
    batches = _int_list(batch, "--batch")
    with Progress(console=err_console, transient=True) as progress:
        bar = progress.add_task("timed rounds", total=iters * len(batches))
        done_before = {"rounds": 0}

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done_before["rounds"] + done)
            if done == total:
                done_before["rounds"] += total

        result = bench_models(list(models), batches, plan, threads, advance)
    table = Table(title=f"latency (ms), {iters} interleaved rounds, threads {threads or os.cpu_count()}")
    for col in ("model", "batch", "median", "p90", "p99", "min", "CV%", "img/s", "ratio to first (p10-p90)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in result.rows:
        s = row.stats
        cv = f"[red]{s.cv_pct:.1f} noisy[/]" if s.noisy else f"{s.cv_pct:.1f}"
        band = f"{row.ratio:.3f} ({row.ratio_band[0]:.3f}-{row.ratio_band[1]:.3f})"
        table.add_row(row.name, str(row.batch), f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.p99_ms:.3f}",
                      f"{s.min_ms:.3f}", cv, f"{row.batch * 1e3 / s.median_ms:.1f}", band)
    console.print(table)
    env = result.environment
    console.print(f"{env['cpu_model']} ({env['cpu_flags']}), {env['cores']} cores, governor {env['governor']}, "
                  f"gpu {env['gpu']}")
    if json_out:
        payload = {"environment": env, "rows": [
            {"model": r.name, "batch": r.batch, **r.stats.to_dict(), "ratio_to_first": r.ratio,
             "ratio_p10_p90": r.ratio_band} for r in result.rows]}
        tmp = Path(json_out + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(json_out)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--batch", default=None, type=int, help="Batch size (dynamic-batch exports only; default: the model's).")
@click.option("--runs", default=30, show_default=True, type=int, help="Profiled runs after the warm-up.")
@click.option("--threads", default=None, type=int, help="Intra-op threads (default: all cores).")
@click.option("--top", default=12, show_default=True, type=int, help="Nodes listed.")
def profile(model: str, batch: int | None, runs: int, threads: int | None, top: int) -> None:
    """Where an ONNX model's time goes in onnxruntime: per operator type and the slowest nodes."""
    from psdeploy.bench.profile import profile_onnx

    if runs < 1:
        raise PsdeployError(f"--runs {runs}: expected at least 1")
    by_type, by_node = profile_onnx(model, batch, runs, threads)
    for title, rows in ((f"{Path(model).name}: kernel time per operator type, ms per run ({runs} runs)", by_type),
                        (f"slowest {top} nodes", by_node[:top])):
        table = Table(title=title)
        for col in ("name", "op", "ms/run", "calls/run", "share"):
            table.add_column(col, justify="left" if col in ("name", "op") else "right")
        for r in rows:
            table.add_row(r.name, r.op_type, f"{r.ms_per_run:.3f}", f"{r.calls_per_run:g}", f"{100 * r.share:.1f}%")
        console.print(table)
    console.print(f"total kernel time {sum(r.ms_per_run for r in by_type):.3f} ms per run")


@main.command()
@click.option("--recipe", type=click.Path(dir_okay=False), help="Report recipe (recipes/reports/*.yaml).")
@click.option("--quick", is_flag=True, help="The small report CI runs: demo networks and small layers.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report directory.")
@click.option("--threads", type=int, default=None, help="Threads for every backend (default: recipe, else 2).")
@click.option("--compare", "compare_with", type=click.Path(dir_okay=False, exists=True),
              help="Earlier report.json: list ratios that got worse beyond noise; exit 1 if any.")
def report(recipe: str | None, quick: bool, output: str, threads: int | None, compare_with: str | None) -> None:
    """Appendix G latency tables (layer and network) per backend: Markdown, JSON, CSV and PNG."""
    from psdeploy.report import compare_reports, load_report_config, quick_config, run_report, to_json, write_report

    if quick == bool(recipe):
        raise PsdeployError("report: give exactly one of --recipe FILE or --quick")
    config = quick_config(threads or 2) if quick else load_report_config(recipe, threads)
    data = run_report(config)
    paths = write_report(data, Path(output))
    console.print(f"[green]wrote[/] {', '.join(str(p) for p in paths)}")
    if compare_with:
        changes = compare_reports(Path(compare_with), to_json(data))
        worse = [c for c in changes if c.worse]
        for c in changes:
            mark = "[red]WORSE[/]" if c.worse else "ok"
            console.print(f"{mark:>5}  {c.key}: {c.old:.3f}x -> {c.new:.3f}x")
        if worse:
            err_console.print(f"[red]{len(worse)} ratio(s) got worse beyond the recorded spread[/]")
            sys.exit(1)
