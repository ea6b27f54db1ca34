"""One load: a fresh process that opens every model, times them interleaved, and reports back.

A model's speed can depend on the process that runs it (where its buffers land, what state
the machine is in while it runs), so ``bench`` times several such loads, not one. The
parent sends a ``LoadRequest`` on stdin; the child writes one JSON line per timed round
(progress) and a last line with every case's samples. A failure a user can cause reaches
the parent as the child's one-line error (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from psdeploy.bench.timing import TimedCase, TimingPlan, run_interleaved
from psdeploy.errors import PsdeployError

EXIT_USER_ERROR = 2


class LoadRequest(BaseModel):
    paths: list[str]  # in the order this load opens them (and starts each round with)
    batches: list[int]  # timed one after another, every model open throughout
    plan: dict[str, float | int]
    threads: int | None = None


class BatchTimes(BaseModel):
    samples_ms: dict[str, list[float]]
    rounds_ms: dict[str, list[float]]


class LoadResult(BaseModel):
    batches: list[BatchTimes]  # in the request's order
    runs_on: dict[str, str]


def _time_one_load(request: LoadRequest, progress: Callable[[int, int], None]) -> LoadResult:
    from psdeploy.backends import open_runner
    from psdeploy.parity.compare import make_input

    runners = {path: open_runner(path, request.threads) for path in request.paths}
    plan = TimingPlan(**request.plan)
    results = []
    for k, batch in enumerate(request.batches):
        inputs = {p: make_input((batch, *r.input_shape[1:]), seed=0) for p, r in runners.items()}
        cases = {p: (lambda r=r, x=inputs[p]: r.run(x)) for p, r in runners.items()}
        timed = run_interleaved(cases, plan, lambda n, total, k=k: progress(k * total + n, len(request.batches) * total))
        results.append(BatchTimes(samples_ms={p: t.samples_ms for p, t in timed.items()},
                                  rounds_ms={p: t.rounds_ms for p, t in timed.items()}))
    return LoadResult(batches=results, runs_on={p: r.description for p, r in runners.items()})


def run_load(request: LoadRequest, progress: Callable[[int, int], None] | None = None
             ) -> tuple[list[dict[str, TimedCase]], dict[str, str]]:
    """Time ``request`` in a fresh Python process: (per batch, path -> timed case; path -> what it ran on)."""
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen([sys.executable, "-m", "psdeploy.bench.load"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=errors, text=True)
        assert child.stdin and child.stdout
        child.stdin.write(request.model_dump_json())
        child.stdin.close()
        result = None
        for line in child.stdout:
            message = json.loads(line)
            if "round" in message and progress:
                progress(*message["round"])
            result = message.get("result", result)
        child.wait()
        errors.seek(0)
        error = errors.read().strip()
    if child.returncode != 0 or result is None:
        last = error.splitlines()[-1] if error else f"exit {child.returncode}"
        raise PsdeployError(last if child.returncode == EXIT_USER_ERROR
                            else f"bench: the process timing {', '.join(request.paths)} failed ({last})")
    loaded = LoadResult.model_validate(result)
    return [{p: TimedCase(Path(p).name, b.samples_ms[p], b.rounds_ms[p]) for p in request.paths}
            for b in loaded.batches], loaded.runs_on


def _main() -> None:
    """The child: its protocol on the original stdout; anything a runtime prints to stdout goes to stderr."""
    request = LoadRequest.model_validate_json(sys.stdin.read())
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def say(message: dict[str, object]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    def report_round(done: int, total: int) -> None:
        say({"round": [done, total]})

    try:
        result = _time_one_load(request, report_round)
    except PsdeployError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    say({"result": result.model_dump()})


if __name__ == "__main__":
    _main()
