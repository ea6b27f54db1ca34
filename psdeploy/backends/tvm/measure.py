"""Where candidates are built and measured, and how long each phase took.

MetaSchedule's ``LocalBuilder`` starts a fresh process pool for every batch (each worker
importing TVM, seconds of CPU before it builds anything); ``PooledBuilder`` keeps its workers
for the whole run and recycles each after ``WORKER_USES`` builds (the memory growth
``LocalBuilder``'s comment gives as its reason to restart). Candidates are measured here by
MetaSchedule's ``LocalRunner`` (one long-lived worker running the target's thread count), or on
the servers of a TVM RPC tracker (``fleet.py``).

On CPU a candidate is timed as it runs inside a network: each run starts with its weights and output
flushed from the caches, as the other layers' weights evict them there. MetaSchedule's default times
repeated warm runs for 100 ms: a late-stage PSConv kernel (512@7, 9.4 MB of weights) measured 0.80 ms
that way and 1.25 ms cold, which is what it took in PS-ResNet-50 (1.2 ms), so the tuner ranked
schedules on a speed the network never sees.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from psdeploy.backends.tune_options import RpcTracker
from psdeploy.errors import PsdeployError

# MetaSchedule's 30 s default build timeout kills every candidate on a 2-core machine
# (LLVM compiles heavily unrolled schedules, two at a time).
BUILD_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60
WORKER_USES = 64  # builds per builder process before it is replaced
TRACKER_PROBE_S = 10
COLD_RUNS = 10  # cold runs averaged per CPU candidate


@dataclass
class PhaseClock:
    """Seconds of wall time per tuning phase, summed over batches, from ``origin`` on."""

    seconds: dict[str, float] = field(default_factory=lambda: {"build": 0.0, "run": 0.0, "update": 0.0})
    origin: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.origin

    def mark_once(self, phase: str) -> None:
        """``phase`` is everything from ``origin`` to the first call (setup, before the first batch)."""
        self.seconds.setdefault(phase, self.elapsed())

    @contextmanager
    def timing(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def timed(self, phase: str, fn: Callable):
        def call(*args):
            with self.timing(phase):
                return fn(*args)

        return call


def pooled_builder(clock: PhaseClock, workers: int):
    """A MetaSchedule builder whose worker processes live as long as it does."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    from psdeploy.backends.tvm.ms_build import build_and_export, send_by_value

    send_by_value()

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=workers, timeout=BUILD_TIMEOUT_S,
                                          maximum_process_uses=WORKER_USES)

        def build(self, build_inputs: list) -> list:
            with clock.timing("build"):
                jobs = [(b.mod, b.target) for b in build_inputs]
                return [self._result(r) for r in self.pool.map_with_error_catching(
                    lambda job: build_and_export(*job), jobs)]

        @staticmethod
        def _result(mapped) -> BuilderResult:
            if mapped.status == StatusKind.COMPLETE:
                return BuilderResult(mapped.value, None)
            if mapped.status == StatusKind.TIMEOUT:
                return BuilderResult(None, f"PooledBuilder: timeout, killed after {BUILD_TIMEOUT_S} s")
            return BuilderResult(None, f"PooledBuilder: an exception occurred\n{mapped.value}")

        def shutdown(self) -> None:
            self.pool.shutdown()

    return PooledBuilder()


def timed_runner(inner, clock: PhaseClock):
    """``inner`` (a MetaSchedule runner), its time in ``clock``: the call, and the waits for its results."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture

    @derived_object
    class TimedRunner(PyRunner):
        def run(self, runner_inputs: list) -> list:
            with clock.timing("run"):
                futures = inner.run(runner_inputs)
            return [RunnerFuture(f.done, clock.timed("run", f.result)) for f in futures]

    return TimedRunner()


def tracker_servers(rpc: RpcTracker) -> int:
    """Servers registered with the tracker under ``rpc.key`` (free or busy); 0 if none.

    A plain socket probe first: TVM's own client retries an unreachable address for a minute; and
    its sockets get a deadline (they have none: a tracker that stops answering would block here)."""
    from tvm import rpc as tvm_rpc

    previous = socket.getdefaulttimeout()
    try:
        socket.create_connection((rpc.host, rpc.port), timeout=TRACKER_PROBE_S).close()
        socket.setdefaulttimeout(TRACKER_PROBE_S)
        summary = tvm_rpc.connect_tracker(rpc.host, rpc.port).summary()
    except Exception as exc:  # socket errors, and TVM's own on a port that is no tracker
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PsdeployError(f"--rpc {rpc.address}: no TVM RPC tracker answers there ({reason}); start one "
                            f"with: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {rpc.port}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return sum(1 for s in summary.get("server_info", []) if s.get("key") == f"server:{rpc.key}")


def evaluator_config(cpu: bool):
    """How each candidate is timed: on CPU ``COLD_RUNS`` runs, each after its weights and output were flushed
    from the caches (TVM's ``cache_flush_cpu_non_first_arg``: every argument but the input); elsewhere
    MetaSchedule's default."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig

    if not cpu:
        return EvaluatorConfig._normalized(None)
    return EvaluatorConfig(number=1, repeat=COLD_RUNS, min_repeat_ms=0, enable_cpu_cache_flush=True)


def local_runner(threads: int | None):
    """MetaSchedule's runner for this machine; on CPU (``threads`` given) its worker runs that many TVM
    threads, checked, and times candidates cold."""
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm.ms_build import checked_local_evaluator, send_by_value, threads_initializer

    if threads is None:
        return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S)
    send_by_value()
    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator_config(cpu=True),
                                 initializer=threads_initializer(threads),
                                 f_run_evaluator=checked_local_evaluator(threads))
