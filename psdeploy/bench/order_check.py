"""Does a ratio depend on the order the models are named in? ``bench A B`` and ``bench B A``, twice each.

Run as ``python -m psdeploy.bench.order_check --pair PLAIN PS [--pair PLAIN PS ...]`` (``make order-check``
names the pairs). For each pair it prints the four estimates of PS / PLAIN (the two ``B A`` runs inverted),
their spread (highest over lowest, minus one) and each run's speed modes; it exits 1 when a spread exceeds
``--max-spread``. A benchmark, not a unit test: it takes minutes and its verdict depends on the machine.
"""

from __future__ import annotations

import sys

import click

from psdeploy.bench import BenchResult, bench_models
from psdeploy.bench.timing import TimingPlan
from psdeploy.bounds import DEFAULT_LOADS
from psdeploy.errors import PsdeployError


def ps_over_plain(result: BenchResult, plain_first: bool) -> float:
    ratio = result.rows[1].pooled.ratio
    return ratio if plain_first else 1 / ratio


def spread(estimates: list[float]) -> float:
    return max(estimates) / min(estimates) - 1


@click.command()
@click.option("--pair", "pairs", nargs=2, multiple=True, required=True, metavar="PLAIN PS",
              help="Two models to compare (ONNX files or artifacts); repeat for each runtime.")
@click.option("--batch", default=1, show_default=True)
@click.option("--iters", default=100, show_default=True)
@click.option("--loads", default=DEFAULT_LOADS, show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--max-spread", default=0.04, show_default=True, help="Largest spread of the four estimates allowed.")
def main(pairs: tuple[tuple[str, str], ...], batch: int, iters: int, loads: int, threads: int | None,
         max_spread: float) -> None:
    plan = TimingPlan(warmup=20, max_warmup=100, iterations=iters)
    failed = False
    for plain, ps in pairs:
        estimates = []
        for plain_first in (True, False, True, False):
            order = [plain, ps] if plain_first else [ps, plain]
            try:
                result = bench_models(order, [batch], plan, threads, loads=loads)
            except PsdeployError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            estimates.append(ps_over_plain(result, plain_first))
            modes = "; ".join(f"{r.name}: " + ", ".join(f"{m.median_ms:.2f} ms x{m.loads}" for m in r.pooled.modes)
                              for r in result.rows)
            click.echo(f"  bench {' '.join(order)}: {ps} / {plain} = {estimates[-1]:.3f}  (modes {modes})")
        verdict = "ok" if spread(estimates) <= max_spread else "TOO WIDE"
        failed |= verdict != "ok"
        click.echo(f"{ps} / {plain}: {', '.join(f'{e:.3f}' for e in estimates)}; spread "
                   f"{100 * spread(estimates):.1f}% ({verdict}, at most {100 * max_spread:.0f}%)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
