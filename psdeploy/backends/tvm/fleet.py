"""Measuring candidates on the servers of a TVM RPC tracker, when servers die, hang or disconnect.

MetaSchedule's ``RPCRunner`` waits for each result without a deadline: a server that dies while
the tracker still hands it out, or one that hangs, stalls the whole run with no output. Here every
measurement runs in a worker process with a deadline (session request, upload, run), enforced by the
kernel when TVM's RPC client holds the interpreter and the worker's own timer cannot fire, so a lost
server costs only the candidates it held; each failed measurement is made once more (on whichever
server the tracker gives next) before the candidate counts as failed. The fleet is lost when the
tracker lists no server under the key any more or no longer answers (asked at each failure, and
every 10 s while a result is awaited), or when two rounds of measurements across the fleet failed
before their kernel ran (servers that are listed but never answer); then no further candidate is
sent, the scheduler stops, and the caller says so in one line with what the database kept.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

from psdeploy.backends.tune_options import RpcTracker
from psdeploy.backends.tvm.measure import RUN_TIMEOUT_S, evaluator_config, tracker_servers
from psdeploy.backends.tvm.ms_build import SERVER_FAULT, THREADS_MISMATCH, send_by_value
from psdeploy.errors import PsdeployError

MEASURE_TIMEOUT_S = RUN_TIMEOUT_S + 30  # a session request and an upload on top of the run itself
WORKER_DEADLINE_S = MEASURE_TIMEOUT_S + 5  # the worker ends itself here if its own timer could not fire
RETRIES = 1  # measurements of a candidate after the first, when its server failed
TRACKER_POLL_S = 10  # while a measurement is awaited, how often the tracker is asked whether a server is left


def _no_answer(exc: BaseException) -> bool:
    """The pool's timeout, or a worker ended by its hard deadline: the server never answered."""
    return isinstance(exc, (TimeoutError, ChildProcessError))


@dataclass
class FleetHealth:
    """What the runner knows of the fleet; ``lost`` says why no server is left (None while one is)."""

    servers: int
    failures_in_a_row: int = 0  # measurements that failed before their kernel ran, since the last success
    lost: str | None = None
    last_fault: str = ""


def _rpc_config(rpc: RpcTracker):
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port, tracker_key=rpc.key,
                               session_timeout_sec=RUN_TIMEOUT_S)


def check_fleet_threads(rpc: RpcTracker, threads: int | None) -> int:
    """Servers registered under the key, one of them asked how many TVM threads it runs; a one-line
    error when none is registered, none answers in time, or it runs another count than the target's."""
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    from psdeploy.backends.tvm.ms_build import server_threads

    servers = tracker_servers(rpc)
    if servers == 0:
        raise PsdeployError(f"--rpc-key {rpc.key}: no server is registered with the tracker at {rpc.address} "
                            f"under that key; start them with: TVM_NUM_THREADS=N python -m tvm.exec.rpc_server "
                            f"--tracker {rpc.address} --key {rpc.key}")
    send_by_value()
    pool = PopenPoolExecutor(max_workers=1, timeout=MEASURE_TIMEOUT_S)
    try:
        config = _rpc_config(rpc)
        answer = list(pool.map_with_error_catching(lambda _: server_threads(config, WORKER_DEADLINE_S), [0]))[0]
    finally:
        pool.shutdown()
    if answer.status != StatusKind.COMPLETE:
        detail = "no answer in time" if _no_answer(answer.value) else str(answer.value).strip().splitlines()[-1]
        raise PsdeployError(f"--rpc {rpc.address}: no server under key {rpc.key} gave a session within "
                            f"{MEASURE_TIMEOUT_S} s ({detail})")
    if threads and int(answer.value) != threads:
        raise PsdeployError(f"--rpc {rpc.address}: a server under key {rpc.key} runs {int(answer.value)} TVM threads "
                            f"where the target names {threads} cores; start the servers with TVM_NUM_THREADS={threads}")
    return servers


def fleet_runner(rpc: RpcTracker, threads: int | None, health: FleetHealth, waiting: Callable[[str], None]):
    """A MetaSchedule runner measuring on the tracker's servers, one measurement in flight per server."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult
    from tvm.support.popen_pool import PopenPoolExecutor

    from psdeploy.backends.tvm.ms_build import measure_on_server

    send_by_value()
    config, evaluator = _rpc_config(rpc), evaluator_config(cpu=threads is not None)
    pool = PopenPoolExecutor(max_workers=health.servers, timeout=MEASURE_TIMEOUT_S)
    sent: list[concurrent.futures.Future] = []

    def submit(runner_input):
        sent[:] = [f for f in sent if not f.done()]  # only those still queued or in flight matter at shutdown
        sent.append(pool.submit(measure_on_server, config, threads, evaluator, str(runner_input.artifact_path),
                                str(runner_input.device_type), tuple(a.as_json() for a in runner_input.args_info),
                                WORKER_DEADLINE_S))
        return sent[-1]

    def check_registered() -> int:
        """Servers the tracker lists under the key; the fleet is lost when it lists none or stops answering."""
        try:
            registered = tracker_servers(rpc)
        except PsdeployError:
            health.lost = f"the tracker at {rpc.address} no longer answers"
            return 0
        if registered == 0:
            health.lost = f"no server is registered under key {rpc.key} any more"
        return registered

    def note_fault(fault: str) -> None:
        health.failures_in_a_row += 1
        health.last_fault = fault
        if THREADS_MISMATCH in fault:
            health.lost = fault.split(": ", 1)[-1]
            return
        registered = check_registered()
        if registered and health.failures_in_a_row >= 2 * health.servers:
            health.lost = (f"the last {health.failures_in_a_row} measurements failed before their kernel ran "
                           f"on the {registered} server(s) still registered ({fault})")

    class Measurement:
        """One candidate's measurement, sent again once when it failed (a server killed mid-run fails its
        candidate like a kernel that crashed it would)."""

        def __init__(self, runner_input) -> None:
            self.input, self.attempts, self.outcome = runner_input, 0, None
            self.future = self._send()

        def _send(self):
            if health.lost:
                self.outcome = RunnerResult(None, f"not measured: the fleet is lost ({health.lost})")
                return None
            self.attempts += 1
            return submit(self.input)

        def _settle(self) -> None:
            """Read the finished future: an outcome, or a second attempt in flight."""
            try:
                secs = self.future.result()
            except Exception as exc:  # the pool's TimeoutError, a worker ended by its deadline, or what it raised
                fault = (f"{SERVER_FAULT}: no answer within {MEASURE_TIMEOUT_S} s" if _no_answer(exc)
                         else str(exc).strip())
                if SERVER_FAULT in fault or THREADS_MISMATCH in fault:
                    note_fault(fault)  # no server, or a dead or misconfigured one: the fleet's health
                # a failure while running is the candidate's or its server's (killed mid-run): measured again once
                if self.attempts <= RETRIES and not health.lost:
                    self.future = self._send()
                else:
                    lines = fault.splitlines()
                    self.outcome = RunnerResult(None, f"psdeploy fleet runner: {lines[-1] if lines else fault} "
                                                      f"(measured {self.attempts} time(s))")
                return
            health.failures_in_a_row = 0
            self.outcome = RunnerResult(secs, None)

        def _abandon_if_lost(self) -> None:
            """Once the fleet is lost, a measurement still queued is dropped, and one in flight is not waited for."""
            if self.outcome is None and health.lost:
                self.future.cancel()
                self.outcome = RunnerResult(None, f"not measured: the fleet is lost ({health.lost})")

        def done(self) -> bool:
            self._abandon_if_lost()
            while self.outcome is None and self.future.done():
                self._settle()
            return self.outcome is not None

        def result(self):
            self._abandon_if_lost()
            while self.outcome is None:
                try:  # the worker's deadline bounds the attempt; meanwhile the tracker is asked if any server is left
                    self.future.exception(timeout=TRACKER_POLL_S)
                except concurrent.futures.TimeoutError:
                    check_registered()
                    self._abandon_if_lost()
                    continue
                except concurrent.futures.CancelledError:
                    pass  # settled below like any failure
                self._settle()
                self._abandon_if_lost()
            return self.outcome

    @derived_object
    class FleetRunner(PyRunner):
        def run(self, runner_inputs: list) -> list:
            waiting(f"waiting for {len(runner_inputs)} measurements on {health.servers} server(s) at {rpc.address} "
                    f"key {rpc.key}, up to {MEASURE_TIMEOUT_S} s each")
            measurements = [Measurement(i) for i in runner_inputs]
            return [RunnerFuture(m.done, m.result) for m in measurements]

        def shutdown(self) -> None:
            """Measurements still queued (batches MetaSchedule sent but never read, when it stopped early) are
            dropped: the pool would otherwise run them all, each up to its deadline on a lost fleet."""
            for future in sent:
                future.cancel()
            # End the measurements in flight (a lost server's included) and let their pool threads see their
            # workers exit before the pool's own shutdown kills what is left: TVM's PopenWorker.kill reads its
            # process twice, and a pool thread killing the same worker between the two reads raised in shutdown.
            for worker in list(pool._worker_map.values()):
                process = worker._proc
                if process is not None:
                    process.kill()
            concurrent.futures.wait(sent, timeout=MEASURE_TIMEOUT_S)
            pool.shutdown()

    return FleetRunner()
