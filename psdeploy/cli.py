"""``psdeploy``: a thin click layer over the API. Errors become one line and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from psdeploy.console import console, err_console, giga, millions, parity_table
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
              help="reference (released form, unfolded) or a lowering: grouped, ...")
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
