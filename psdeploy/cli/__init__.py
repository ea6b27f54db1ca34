"""``psdeploy``: a thin click layer over ``psdeploy.api``; tables come from ``psdeploy.cli.render``.

Errors, click's own usage errors included, become one line on stderr (``error: ...``) and exit
code 2; Ctrl-C exits 130. The pipeline (torch, onnx, the runtimes: seconds to import) is imported
inside each command, after its arguments are checked, so a bad flag or a missing file is told at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from psdeploy import bounds
from psdeploy.errors import PsdeployError
from psdeploy.sources import CHECKPOINT, COMPILABLE, check_source

if TYPE_CHECKING:
    from psdeploy.progress import Progress

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_WORSE = 1  # report --compare: a ratio got worse beyond noise


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Every failure a user can cause, ours or click's, as one ``error:`` line and exit code 2."""
    from rich.markup import escape

    from psdeploy.console import err_console

    try:
        yield
    except PsdeployError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.NoArgsIsHelpError:  # bare 'psdeploy': the help, as click shows it
        raise
    except click.ClickException as exc:  # a flag's value, a missing argument, an unknown option or command
        where = f"{exc.ctx.command_path}: " if isinstance(exc, click.UsageError) and exc.ctx else ""
        err_console.print(f"[red]error:[/] {escape(where + exc.format_message())}", soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPTED)


def _set_verbose(ctx: click.Context, param: click.Parameter, verbose: bool) -> None:
    from psdeploy.quiet import set_verbose

    if verbose or ctx.parent is None:  # before the command name (reset on each run) or after it
        set_verbose(verbose)


def _verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
                        help="Show third-party warnings and logs (torch, onnxscript, TVM).")


class _Group(click.Group):
    """One-line errors around parsing and running, and ``-v`` on every command."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _one_line_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context):
        with _one_line_errors():
            return super().invoke(ctx)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(_verbose_option())
        super().add_command(cmd, name)


@click.group(cls=_Group, params=[_verbose_option()])
@click.version_option(package_name="psdeploy")
def main() -> None:
    """Deploy PS-ResNet / PS-ResNeXt: load, rewrite, export, compile, verify, benchmark."""


def _range(bound: bounds.Bound) -> click.ParamType:
    """The click range (shown in --help) of a bound the API checks too."""
    return (click.FloatRange if bound.real else click.IntRange)(bound.low, bound.high)


def _warn_oversubscribed(ctx: click.Context, param: click.Parameter, threads: int | None) -> int | None:
    """More threads than CPUs runs, and measures, threads fighting over cores: say so before any work."""
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        from psdeploy.console import err_console

        err_console.print(f"[bold yellow]warning:[/] --threads {threads} is more than the {cpus} CPUs here; the "
                          f"extra threads take turns on them, which slows every model and skews its timings",
                          soft_wrap=True)
    return threads


def _checked(expected: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback: the source argument checked (missing file, an artifact given for a checkpoint)."""
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            check_source(value, expected)
        return value
    return callback


ARCH_OPTION = click.option("--arch", default=None, help="Architecture name (default: detected from the keys).")
THREADS_OPTION = click.option("--threads", default=None, type=_range(bounds.THREADS), callback=_warn_oversubscribed,
                              help="Intra-op threads (default: the runtime's own, e.g. onnxruntime's one per "
                                   "physical core; a model's 'runs on' says how many).")
AGAINST_OPTION = click.option("--against", "checkpoint", required=True, callback=_checked(CHECKPOINT),
                              help="The checkpoint the model was compiled or exported from.")
TOLERANCE_HELP = "max|err|/max|ref| allowed."
# Every command that writes takes this one --force; the rule it relaxes is psdeploy.fileio's: an existing output
# is refused, missing parent folders are created, and nothing half-written stays.
FORCE_OPTION = click.option("--force", is_flag=True,
                            help="Replace the output if it exists (without it, an existing output is refused).")


class _Parsed(click.ParamType):
    """A value parsed by the API's own parser before any work starts (the parsed value is what the command
    gets); a bad one is a usage error."""

    def __init__(self, name: str, parse) -> None:
        self.name, self._parse = name, parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # parsed already (click converts a value it was handed once more)
            return value
        try:
            return self._parse(value, "")
        except PsdeployError as exc:
            self.fail(str(exc).strip(), param, ctx)


def _duration(value: str, option: str) -> float:
    from psdeploy.backends.tune_options import parse_duration

    return parse_duration(value, option)


def _tracker(value: str, option: str) -> tuple[str, int]:
    from psdeploy.backends.tune_options import parse_tracker

    return parse_tracker(value, option)


def _batches(text: str, option: str) -> list[int]:
    """``1,8`` -> batch sizes, each in ``bounds.BATCH``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise PsdeployError(f"{option} {text!r}: expected batch sizes separated by commas, e.g. 1,8")
    return [bounds.BATCH.check(v, option) for v in values]


@main.command()
@click.argument("checkpoint", callback=_checked(CHECKPOINT))
@ARCH_OPTION
def inspect(checkpoint: str, arch: str | None) -> None:
    """Architecture, every PSConv layer, and released-vs-deployed parameters/MACs."""
    from psdeploy import api
    from psdeploy.cli.render import show_inspection

    show_inspection(checkpoint, api.inspect(checkpoint, arch))


@main.command()
@click.argument("checkpoint", callback=_checked(CHECKPOINT))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@ARCH_OPTION
@click.option("--input-shape", default=None, help="N,C,H,W (default: 1,3,224,224; 1,3,32,32 for the digits models).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@click.option("--opset", default=18, show_default=True, type=_range(bounds.OPSET), help="ONNX opset.")
@click.option("--lowering", default=None,
              help="reference (released form, unfolded), grouped, sliced (grouped without Gathers), aligned "
                   "(branch sums fused into the convs), polyphase, fused (one PSConv node per layer, for TVM), or "
                   "auto (fastest per layer geometry, timed on --on); default: --on's fastest form (grouped on "
                   "onnxruntime-cpu, sliced on openvino-cpu).")
@click.option("--tolerance", default=bounds.DEFAULT_TOLERANCE, show_default=True, type=_range(bounds.TOLERANCE),
              help=TOLERANCE_HELP)
@click.option("--on", "on", default="onnxruntime-cpu", show_default=True,
              type=click.Choice(["onnxruntime-cpu", "openvino-cpu"]),
              help="The runtime the file is for: its default lowering, and where --lowering auto times the candidates.")
@FORCE_OPTION
def export(checkpoint: str, output: str, arch: str | None, input_shape: str | None, dynamic_batch: bool,
           opset: int, lowering: str, tolerance: float, on: str, force: bool) -> None:
    """Rewrite, export ONNX and verify it in onnxruntime against the checkpoint."""
    from psdeploy import api
    from psdeploy.cli.render import show_export
    from psdeploy.fileio import check_destination
    from psdeploy.progress import stage

    from psdeploy.export import parse_shape

    check_destination(Path(output), "-o", force=force)
    loaded = api.load(checkpoint, arch)
    input_shape = parse_shape(input_shape, loaded)  # a bad shape is refused before the stage line
    with stage(f"export: rewriting ({lowering or 'default for ' + on}), exporting and verifying {loaded.arch}"):
        result = api.export(loaded, output, lowering=lowering, input_shape=input_shape, opset=opset,
                            dynamic_batch=dynamic_batch, tolerance=tolerance, on=on, force=force)
    show_export(result, loaded.arch, opset)


def _triple(value: str, option: str) -> tuple[float, float, float]:
    from psdeploy.images.preprocess import parse_triple

    return parse_triple(value, option)


@main.command()
@click.argument("model", type=click.Path(exists=True))
@AGAINST_OPTION
@ARCH_OPTION
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="A folder of images: class folders (ImageFolder), or files named in --labels. Without it: the "
                   "digits demo's held-out split.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="'filename label' lines (ImageNet-val's ground truth): label a class index, or a name from "
                   "--classes.")
@click.option("--classes", type=click.Path(exists=True, dir_okay=False),
              help="Class (folder) names, one a line, in the model's class-index order (default: sorted folder names).")
@click.option("--limit", type=_range(bounds.LIMIT), default=None,
              help="Measure a seeded, class-balanced sample of this many images.")
@click.option("--batch", type=_range(bounds.BATCH), default=bounds.DEFAULT_IMAGE_BATCH, show_default=True,
              help="Images a batch (a static-batch artifact runs its own batch within it).")
@click.option("--workers", type=_range(bounds.WORKERS), default=None,
              help="Threads decoding images while the models run (default: up to 4, one per CPU; 0: none).")
@click.option("--skip-bad", is_flag=True, help="Skip files that do not decode (counted and named); without it "
                                               "such a file stops the run.")
@click.option("--resize", type=_range(bounds.IMAGE_SIDE), default=None,
              help="Resize the shorter side to this (default: the model card's preprocessing).")
@click.option("--crop", type=_range(bounds.IMAGE_SIDE), default=None, help="Centre crop side (default: the card's).")
@click.option("--mean", type=_Parsed("R,G,B", _triple), default=None,
              help="Per-channel mean in x/255 units, e.g. 0.485,0.456,0.406 (default: the card's).")
@click.option("--std", type=_Parsed("R,G,B", _triple), default=None,
              help="Per-channel std in x/255 units (default: the card's).")
@THREADS_OPTION
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the results as JSON: every disagreement and skipped file, the preprocessing.")
@FORCE_OPTION
def accuracy(model: str, checkpoint: str, arch: str | None, data: str | None, labels: str | None,
             classes: str | None, limit: int | None, batch: int, workers: int | None, skip_bad: bool,
             resize: int | None, crop: int | None, mean, std, threads: int | None, json_out: str | None,
             force: bool) -> None:
    """Top-1/top-5 of the checkpoint (PyTorch) and an ONNX file or artifact side by side on a folder of images
    (--data), through the model's preprocessing; without --data, held-out top-1 on the digits demo split."""
    if data is None:
        image_options = {"--labels": labels, "--classes": classes, "--limit": limit, "--workers": workers,
                         "--skip-bad": skip_bad or None, "--resize": resize, "--crop": crop, "--mean": mean,
                         "--std": std, "--threads": threads, "--json": json_out}
        given = [option for option, value in image_options.items() if value is not None]
        if given:
            raise PsdeployError(f"{given[0]}: applies to a folder of images; give --data DIR")
        _digits_accuracy(model, checkpoint, arch)
        return
    from psdeploy import api
    from psdeploy.cli.render import console, show_image_accuracy
    from psdeploy.fileio import check_destination, write_atomic
    from psdeploy.progress import Progress

    if json_out:
        check_destination(Path(json_out), "--json", force=force)
    with Progress("accuracy", None, "images") as progress:
        result = api.accuracy_on_images(
            model, checkpoint, data, arch=arch, labels=labels, classes=classes, limit=limit, batch=batch,
            workers=workers, skip_bad=skip_bad, resize=resize, crop=crop, mean=mean, std=std, threads=threads,
            progress=lambda done, total, rate: progress.update(done, total=total, detail=f"{rate:.1f} images/s"))
    show_image_accuracy(result)
    if json_out:
        record = {"model": model, "checkpoint": checkpoint, **result.to_dict()}
        write_atomic(json_out, json.dumps(record, indent=2), "--json", force=force)
        console.print(f"wrote {json_out}")
    if failure := result.fp32_failure():
        raise PsdeployError(f"{model}: {failure}")


def _digits_accuracy(model: str, checkpoint: str, arch: str | None) -> None:
    from psdeploy import api
    from psdeploy.cli.render import console, show_accuracy

    with console.status("evaluating the held-out split…"):  # seconds: a spinner on a terminal, no log line
        report, description = api.accuracy(model, checkpoint, arch)
    show_accuracy(report, description)
    if not report.agree:
        raise PsdeployError(f"{model}: top-1 differs from the checkpoint's ({report.candidate_top1:.4f} vs "
                            f"{report.reference_top1:.4f})")
    console.print("[green]top-1 agrees[/]")


@main.command(name="compile")
@click.argument("source", required=False, callback=_checked(COMPILABLE))
@click.option("--recipe", type=click.Path(dir_okay=False),
              help="YAML recipe (its paths are relative to its own folder); flags given here override it.")
@click.option("--target", default=None,
              help="llvm, cuda, openvino-cpu, onnxruntime-cpu, or a TVM JSON target dict.")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="Artifact directory (default: the recipe's output).")
@ARCH_OPTION
@click.option("--input-shape", default=None, help="N,C,H,W (static for TVM).")
@click.option("--lowering", default=None,
              help="PSConv lowering: grouped, sliced, aligned, polyphase, fused (TVM), auto (timed on the target); "
                   "default: the target's fastest form (sliced on openvino-cpu, fused on TVM, grouped on "
                   "onnxruntime-cpu).")
@click.option("--tune-trials", type=_range(bounds.TUNE_TRIALS), default=None,
              help="MetaSchedule trials in total (TVM); 0 = none (schedules from --tuning-db alone); with "
                   "--tune-time, a cap.")
@click.option("--tune-time", type=_Parsed("DURATION", _duration), default=None,
              help="Tune for this long (TVM), e.g. 90s, 20m, 1h; stops at this or --tune-trials, whichever first.")
@click.option("--untuned", is_flag=True,
              help="TVM, no budget: build the tasks --tuning-db has no record of untuned (many times slower); "
                   "without it such a build is refused.")
@click.option("--rpc", type=_Parsed("HOST:PORT", _tracker), default=None,
              help="Measure tuning candidates on the servers of this TVM RPC tracker (needs --rpc-key).")
@click.option("--rpc-key", default=None, help="The key the RPC servers registered under (e.g. xeon).")
@click.option("--tuning-db", default=None, type=click.Path(file_okay=False), help="Tuning database root.")
@click.option("--mcpu", default=None, help="LLVM CPU (e.g. skylake-avx512, haswell); default: this CPU.")
@click.option("--num-cores", type=_range(bounds.NUM_CORES), default=None, help="Cores the TVM llvm target assumes.")
@click.option("--cuda-arch", default=None, help="CUDA arch for --target cuda (default sm_90).")
@click.option("--precision", default=None, type=click.Choice(bounds.PRECISIONS),
              help="f32 (default); OpenVINO: f16, bf16; onnxruntime and OpenVINO: int8 (needs --calibration).")
@click.option("--calibration", default=None,
              help="int8: a folder of images (class folders or flat; the model's preprocessing), 'digits' (the demo's "
                   "data), a .npy array N,C,H,W, or a folder of .npy files; a quarter is held out to gate the "
                   "artifact against fp32.")
@click.option("--calibration-size", type=_range(bounds.CALIBRATION_SIZE), default=None,
              help=f"int8 on images: calibrate on a seeded class-balanced sample of this many (default "
                   f"{bounds.DEFAULT_CALIBRATION_SIZE}), a third as many more held out.")
@click.option("--skip-bad", is_flag=True,
              help="--calibration images: skip files that do not decode (recorded); without it one stops the build.")
@click.option("--min-cosine", type=_range(bounds.MIN_COSINE), default=None,
              help=f"int8/f16/bf16 gate: mean output cosine to fp32 (default {bounds.DEFAULT_MIN_COSINE:g}).")
@click.option("--min-agreement", type=_range(bounds.MIN_AGREEMENT), default=None,
              help=f"int8/f16/bf16 gate: fraction of samples with fp32's top-1 class (default {bounds.DEFAULT_MIN_AGREEMENT:g}).")
@click.option("--max-top1-drop", type=_range(bounds.MAX_TOP1_DROP), default=None,
              help=f"int8/f16/bf16 gate on the digits demo: top-1 points below the checkpoint's "
                   f"(default {bounds.DEFAULT_MAX_TOP1_DROP:g}).")
@click.option("--winograd", default=None, type=click.Choice(bounds.WINOGRAD),
              help="TVM: Winograd F(2x2,3x3)/F(4x4,3x3) for every stride-1 3x3 conv, dilated ones included (default off).")
@click.option("--layout", default=None, type=click.Choice(bounds.LAYOUTS),
              help="TVM: the data layout convs compile in: nchwc blocks channels by the CPU's vector width "
                   "(default on llvm, measured fastest, Winograd or not; cuda: nchw).")
@click.option("--tolerance", type=_range(bounds.TOLERANCE), default=None,
              help=TOLERANCE_HELP + f" (default {bounds.DEFAULT_TOLERANCE:g})")
@FORCE_OPTION
def compile_cmd(source, recipe, target, output, arch, input_shape, lowering, tune_trials, tune_time, untuned, rpc,
                rpc_key, tuning_db, mcpu, num_cores, cuda_arch, precision, calibration, calibration_size, skip_bad,
                min_cosine, min_agreement, max_top1_drop, winograd, layout, tolerance, force) -> None:
    """Compile a checkpoint (or psdeploy-exported ONNX) for TVM llvm/cuda, OpenVINO or onnxruntime, verified."""
    from psdeploy import api
    from psdeploy.cli.render import show_compile

    result = api.compile(source, recipe=recipe, target=target, output=output, arch=arch, input_shape=input_shape,
                         lowering=lowering, tune_trials=tune_trials, tune_time=tune_time,
                         untuned=untuned or None,  # not given: the recipe's
                         rpc=rpc, rpc_key=rpc_key, tuning_db=tuning_db, mcpu=mcpu,
                         num_cores=num_cores, cuda_arch=cuda_arch, precision=precision, calibration=calibration,
                         calibration_size=calibration_size, skip_bad=skip_bad, min_cosine=min_cosine, min_agreement=min_agreement, max_top1_drop=max_top1_drop,
                         winograd=winograd, layout=layout, tolerance=tolerance, force=force)
    show_compile(result)


@main.command(name="digits-images")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder to write: train/<digit>/*.png and held-out/<digit>/*.png.")
@FORCE_OPTION
def digits_images(output: str, force: bool) -> None:
    """The digits demo's data as PNG files in class folders (what accuracy --data and --calibration read)."""
    from psdeploy import api
    from psdeploy.cli.render import console

    counts = api.digits_images(output, force=force)
    console.print(f"wrote {output}: " + ", ".join(f"{split}/ {n} images" for split, n in counts.items()))


@main.command()
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--input", "input_file", type=click.Path(dir_okay=False, exists=True), help=".npy input (N,C,H,W).")
@click.option("--save-output", type=click.Path(dir_okay=False), help="Write the first output to this .npy.")
@THREADS_OPTION
@FORCE_OPTION
def run(artifact: str, input_file: str | None, save_output: str | None, threads: int | None, force: bool) -> None:
    """Run an artifact (or ONNX file) on an input or a random one; print top-5 or output stats."""
    from psdeploy import api
    from psdeploy.cli.render import console, show_run
    from psdeploy.fileio import atomic_output, check_destination

    if save_output:
        check_destination(Path(save_output), "--save-output", force=force)
    result = api.run(artifact, input_file, threads)
    show_run(result)
    if save_output:
        import numpy as np

        with atomic_output(save_output, "--save-output", force=force) as tmp, tmp.open("wb") as fh:
            np.save(fh, result.outputs[0])
        console.print(f"saved {save_output}")


@main.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@AGAINST_OPTION
@ARCH_OPTION
@click.option("--tolerance", type=_range(bounds.TOLERANCE), default=bounds.DEFAULT_TOLERANCE, show_default=True,
              help=TOLERANCE_HELP)
def verify(artifact: str, checkpoint: str, arch: str | None, tolerance: float) -> None:
    """Parity report of an artifact against its checkpoint; non-zero exit on failure."""
    from psdeploy import api
    from psdeploy.cli.render import console, parity_table

    report = api.verify(artifact, checkpoint, arch, tolerance)
    console.print(parity_table(report))
    report.raise_if_failed()
    console.print(f"[green]parity ok[/]: worst rel err {report.worst.rel_err:.3g}")


def _bench_progress(progress: Progress, batches: list[int], iters: int, loads: int) -> Callable[[int, int], None]:
    """bench's ``progress(done, total)`` (rounds over every load, each timing every batch in turn) as stages."""
    from psdeploy.bench.timing import rounds_per_load

    shares = rounds_per_load(iters, loads)

    def where(done: int) -> str:
        start = 0
        for k, rounds in enumerate(shares):
            if done <= start + rounds * len(batches) or k == loads - 1:
                batch = batches[min(max(done - start - 1, 0) // rounds, len(batches) - 1)]
                return f"load {k + 1}/{loads}, batch {batch}"
            start += rounds * len(batches)
        return ""

    def advance(done: int, total: int) -> None:  # the first call comes once the models are checked and loading
        progress.update(done, total=total, stage=where(max(done, 1)))

    return advance


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--warmup", default=20, show_default=True, type=_range(bounds.WARMUP), help="Minimum warm-up rounds.")
@click.option("--iters", default=100, show_default=True, type=_range(bounds.ITERS),
              help="Timed rounds in all, shared out over the loads.")
@click.option("--loads", default=bounds.DEFAULT_LOADS, show_default=True, type=_range(bounds.LOADS),
              help="Fresh processes the models are loaded and timed in, one after another.")
@THREADS_OPTION
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@FORCE_OPTION
def bench(models: tuple[str, ...], batch: str, warmup: int, iters: int, loads: int, threads: int | None,
          json_out: str | None, force: bool) -> None:
    """Latency of one or more ONNX files / artifacts over several fresh loads, interleaved round-robin within
    each; ratios to the first, with their spread within a load and across loads."""
    from psdeploy.fileio import check_destination, write_atomic

    batches = _batches(batch, "--batch")
    if json_out:
        check_destination(Path(json_out), "--json", force=force)
    from psdeploy import api
    from psdeploy.cli.render import show_bench
    from psdeploy.progress import Progress

    with Progress("bench", iters, "rounds") as progress:
        result = api.bench(models, batches, warmup=warmup, iters=iters, threads=threads, loads=loads,
                           progress=_bench_progress(progress, batches, iters, loads))
    show_bench(result, threads)
    if json_out:
        write_atomic(json_out, json.dumps(result.to_dict(), indent=2), "--json", force=force)


@main.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--on", "on", default=None, type=click.Choice(["onnxruntime-cpu", "openvino-cpu"]),
              help="Runtime for an ONNX file (default onnxruntime-cpu); an artifact runs on its own backend.")
@click.option("--against", default=None, type=click.Path(exists=True),
              help="A second model (e.g. the plain ResNet) profiled the same way, shown side by side.")
@click.option("--batch", default=None, type=_range(bounds.BATCH),
              help="Batch size (dynamic-batch models only; default: the model's).")
@click.option("--runs", default=30, show_default=True, type=_range(bounds.RUNS), help="Profiled runs after the warm-up.")
@THREADS_OPTION
@click.option("--top", default=12, show_default=True, type=_range(bounds.TOP), help="Nodes listed.")
@click.option("--layers", is_flag=True, help="Also time per network layer (with --against: layer by layer, ratios).")
@click.option("--rounds", default=None, type=_range(bounds.ROUNDS),
              help=f"With --against: alternating rounds, each loading both models anew; medians, and each conv's "
                   f"share of the other's speed with its p10-p90 band  [default: {bounds.DEFAULT_PROFILE_ROUNDS}]")
def profile(model: str, on: str | None, against: str | None, batch: int | None, runs: int, threads: int | None,
            top: int, layers: bool, rounds: int | None) -> None:
    """Where a model's time goes, per operator type, kernel and node, from the runtime's own counters
    (onnxruntime's profiler, OpenVINO's PERF_COUNT, TVM's VM), with the layout reorders it ran."""
    from psdeploy import api
    from psdeploy.cli.render import show_convs, show_layers, show_profile, show_profile_against

    if against is None:
        if rounds is not None:
            raise PsdeployError("--rounds: only with --against (rounds alternate two models)")
        result = api.profile(model, batch, runs, threads, on)
        show_profile(result, top)
        if layers:
            show_layers(result)
        return
    pair = api.profile_against(model, against, rounds or bounds.DEFAULT_PROFILE_ROUNDS, batch, runs, threads, on)
    show_profile(pair.first, top)
    show_profile_against(pair)
    if pair.first.convs and pair.other.convs:
        show_convs(pair)
    if layers:
        show_layers(pair.first, pair.other)


@main.command()
@click.option("--recipe", type=click.Path(dir_okay=False), help="Report recipe (recipes/reports/*.yaml).")
@click.option("--quick", is_flag=True, help="The small report CI runs: demo networks and small layers.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report directory.")
@click.option("--threads", type=_range(bounds.THREADS), default=None,
              help="Threads for every backend (default: recipe, else 2).")
@click.option("--compare", "compare_with", type=click.Path(dir_okay=False, exists=True),
              help="Earlier report.json: list ratios that got worse beyond noise; exit 1 if any.")
@click.option("--from-bundle-results", "bundle_results", type=click.Path(dir_okay=False, exists=True),
              help="The JSON a recipe bundle's run.py wrote (on a GPU server): its report, nothing timed here.")
@FORCE_OPTION
def report(recipe: str | None, quick: bool, output: str, threads: int | None, compare_with: str | None,
           bundle_results: str | None, force: bool) -> None:
    """Appendix G latency tables (layer and network) per backend: Markdown, JSON, CSV and PNG."""
    from psdeploy import api
    from psdeploy.cli.render import show_report

    if bundle_results:
        if recipe or quick or threads or compare_with:
            raise PsdeployError("--from-bundle-results: the recipe and timing are the bundle's; drop --recipe, "
                                "--quick, --threads and --compare")
        show_report(api.report_from_bundle(bundle_results, output, force=force), [])
        return
    _, paths, changes = api.report(output, recipe=recipe, quick=quick, threads=threads, compare_with=compare_with,
                                   force=force)
    show_report(paths, changes)
    if any(c.worse for c in changes):
        sys.exit(EXIT_WORSE)


@main.command(name="prune-db")
@click.argument("source", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="New tuning-database root: the best record of each workload, per target.")
@FORCE_OPTION
def prune_db(source: str, output: str, force: bool) -> None:
    """Keep the best schedule of each workload of a TVM tuning database (to commit, or to start from)."""
    from psdeploy import api
    from psdeploy.cli.render import show_pruned

    show_pruned(api.prune_tuning_db(source, output, force=force), output)


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(file_okay=False, exists=True))
@click.option("--recipe", type=click.Path(dir_okay=False, exists=True),
              help="Report recipe: bundle every TVM case it times (recipes/reports/appendix_g_gpu.yaml).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Bundle folder: modules, weights, TVM's runtime and run.py.")
@click.option("--python", "python", default=None, metavar="X.Y",
              help="CPython version of the server (its tvm_ffi wheel is fetched here); default: this Python's.")
@click.option("--regenerate-seeded", is_flag=True,
              help="seeded: artifacts' weights are drawn there from their seeds instead of shipped (see README).")
@click.option("--iters", type=_range(bounds.ITERS), default=None, help="run.py's timed rounds per group (default 50).")
@click.option("--loads", type=_range(bounds.LOADS), default=None, help="run.py's loads per group (default 3).")
@click.option("--max-mib", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Refuse (write nothing) if the bundle would be larger, in MiB (a transfer's limit).")
@FORCE_OPTION
def bundle(artifacts: tuple[str, ...], recipe: str | None, output: str, python: str | None, regenerate_seeded: bool,
           iters: int | None, loads: int | None, max_mib: float | None, force: bool) -> None:
    """TVM artifacts (or a report recipe's TVM cases) as one folder a server runs with 'python DIR/run.py',
    numpy alone there: modules with their weights apart, TVM's runtime, expected outputs, the timing."""
    from psdeploy import api
    from psdeploy.cli.render import show_bundle
    from psdeploy.progress import Progress

    with Progress("bundle", len(artifacts) or None, "modules", transient=False) as progress:
        built = iter(range(10**9))
        result = api.bundle(list(artifacts), output, recipe=recipe, python=python,
                            regenerate_seeded=regenerate_seeded, iters=iters, loads=loads, max_mib=max_mib,
                            force=force, on_entry=lambda name: progress.update(next(built), stage=f"building {name}"))
        progress.update(len(result.manifest["artifacts"]), stage="done")
    show_bundle(result)
