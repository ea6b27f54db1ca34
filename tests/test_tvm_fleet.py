"""Tuning on a fleet of TVM RPC servers on 127.0.0.1, started the way the README says: candidates are
measured there at the target's thread count; a server on another count is refused before any work; a
server killed mid-run costs only its candidates; losing every server is one line with the records kept;
the demo's default lowering (its Gathers included) tunes through two servers with no task all failed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import pytest

from psdeploy.backends import parse_target
from psdeploy.backends.tune_options import RpcTracker
from psdeploy.errors import PsdeployError
from tests.conftest import DEMO_CHECKPOINT
from tests.test_tvm_tuning import _record_lines, layer  # noqa: F401 (a fixture)

pytest.importorskip("tvm")
pytest.importorskip("tornado")  # the tracker's event loop; the 'tvm' extra brings it

SERVERS_UP_S = 120
KEY = "xeon"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fleet:
    """A tracker and servers, each in a session of its own (so a server's per-session workers go with it)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.servers: list[subprocess.Popen] = []
        self.tracker = self._start([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                    "--port", str(self.port), "--port-end", str(self.port + 1)])
        self._wait_for(0)

    @staticmethod
    def _start(command: list[str], **env: str) -> subprocess.Popen:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **env})

    def _registered(self) -> int:
        from tvm import rpc

        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()  # TVM's client retries for 5 s
        return sum(s["key"] == f"server:{KEY}" for s in rpc.connect_tracker("127.0.0.1", self.port)
                   .summary()["server_info"])

    def _wait_for(self, servers: int) -> None:
        deadline = time.monotonic() + SERVERS_UP_S
        while True:
            try:
                if self._registered() == servers:
                    return
            except (OSError, RuntimeError):
                pass  # the tracker is still starting
            assert time.monotonic() < deadline, f"the RPC tracker did not list {servers} server(s)"
            time.sleep(0.5)

    def add_servers(self, count: int, threads: int) -> None:
        """The README's server line, with the environment it asks for."""
        for _ in range(count):
            port = _free_port()
            self.servers.append(self._start(
                [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{self.port}", "--key", KEY,
                 "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                TVM_NUM_THREADS=str(threads)))
        self._wait_for(len(self.servers))

    def kill_server(self, index: int) -> None:
        os.killpg(self.servers[index].pid, signal.SIGKILL)
        self.servers[index].wait(timeout=30)

    @property
    def rpc(self) -> RpcTracker:
        return RpcTracker("127.0.0.1", self.port, KEY)

    def close(self) -> None:
        for proc in [self.tracker, *self.servers]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture()
def fleet():
    """A tracker of the test's own, for tests that start servers on other thread counts or kill them."""
    started = Fleet()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def two_servers():
    """A tracker with two servers at the llvm target's thread count, shared by the tests that kill none."""
    started = Fleet()
    try:
        started.add_servers(2, threads=parse_target("llvm").threads)
        yield started
    finally:
        started.close()


def _tasks(mod, target, db) -> int:
    from psdeploy.backends.tvm import tuning

    return len(tuning.plan_tuning(mod, target, db, 1).tasks)


def test_candidates_are_measured_on_the_servers_at_the_targets_thread_count(tmp_path, layer, two_servers,
                                                                            monkeypatch) -> None:
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    def no_local_runner(*args, **kwargs):
        raise AssertionError("measured locally, not through the tracker")

    monkeypatch.setattr(ms.runner, "LocalRunner", no_local_runner)
    mod, target = layer
    fleet = two_servers
    db = TuningDatabase(tmp_path / "db", target)
    tasks = _tasks(mod, target, db)
    _, summary = tuning.tune(mod, target, db, trials=tasks, rpc=fleet.rpc)
    assert summary.measured_on == f"rpc 127.0.0.1:{fleet.port} key {KEY}"
    assert summary.measured_threads == target.threads
    assert summary.trials_measured >= tasks and _record_lines(tmp_path / "db", target) == summary.trials_measured
    assert summary.tasks_all_failed == []

    with pytest.raises(PsdeployError, match="--rpc-key epyc: no server is registered"):
        tuning.tune(mod, target, db, trials=tasks * 4, rpc=RpcTracker("127.0.0.1", fleet.port, "epyc"))


def test_a_server_on_another_thread_count_is_refused_before_any_work(tmp_path, layer, fleet) -> None:
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = layer
    other = 1 if target.threads > 1 else 2  # TVM caps a count above the machine's cores
    fleet.add_servers(1, threads=other)
    with pytest.raises(PsdeployError, match=rf"^--rpc 127\.0\.0\.1:\d+: a server under key {KEY} runs "
                                            rf"{other} TVM threads where the target names "
                                            rf"{target.threads} cores; start the servers with TVM_NUM_THREADS="):
        tuning.tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=4, rpc=fleet.rpc)
    assert _record_lines(tmp_path / "db", target) == 0


def test_a_server_killed_mid_run_costs_only_its_candidates(tmp_path, layer, fleet) -> None:
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = layer
    fleet.add_servers(2, threads=target.threads)
    db = TuningDatabase(tmp_path / "db", target)
    tasks = _tasks(mod, target, db)
    batches: list[int] = []

    def kill_one_after_the_first_batch(trials: int) -> None:
        batches.append(trials)
        if len(batches) == 1:
            fleet.kill_server(0)

    _, summary = tuning.tune(mod, target, db, trials=4 * tasks, rpc=fleet.rpc, on_batch=kill_one_after_the_first_batch)
    assert len(batches) > 1 and summary.stopped_by in ("trials", "search space")
    assert summary.tasks_all_failed == []  # every task measured on the server left
    assert _record_lines(tmp_path / "db", target) == summary.trials_measured


def test_losing_every_server_is_one_line_and_keeps_the_records(tmp_path, layer, fleet) -> None:
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = layer
    fleet.add_servers(2, threads=target.threads)
    db = TuningDatabase(tmp_path / "db", target)
    tasks = _tasks(mod, target, db)
    first: list[int] = []

    def kill_all_after_the_first_batch(trials: int) -> None:
        if not first:
            first.append(trials)
            fleet.kill_server(0)
            fleet.kill_server(1)

    started = time.monotonic()
    with pytest.raises(PsdeployError) as error:
        tuning.tune(mod, target, db, trials=8 * tasks, rpc=fleet.rpc, on_batch=kill_all_after_the_first_batch)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--rpc 127.0.0.1:{fleet.port} key {KEY}: no server left")
    kept = _record_lines(tmp_path / "db", target)
    assert kept >= first[0] and f"trials measured before are kept in {db.directory}" in message
    assert time.monotonic() - started < 600  # bounded: each measurement has a deadline


def test_the_demos_default_lowering_tunes_through_two_servers(tmp_path, two_servers) -> None:
    """The grouped lowering's Gathers crashed every server (random index arguments); now no task fails."""
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.backends.tvm.tuning_db import TuningDatabase
    from psdeploy.export import export_onnx
    from psdeploy.load import load_model

    target = parse_target("llvm")
    fleet = two_servers
    path = tmp_path / "demo.onnx"
    export_onnx(load_model(str(DEMO_CHECKPOINT)), path)
    mod = lower(import_onnx(path, (1, 3, 32, 32)), target)
    db = TuningDatabase(tmp_path / "db", target)
    tasks = _tasks(mod, target, db)
    _, summary = tuning.tune(mod, target, db, trials=tasks, rpc=fleet.rpc)
    assert summary.trials_measured >= tasks and summary.tasks_all_failed == []
    assert len(fleet.servers) == 2 and all(s.poll() is None for s in fleet.servers)  # no server died


def test_a_worker_stuck_holding_the_interpreter_ends_at_its_deadline() -> None:
    """A worker's own timeout is a Python timer, which cannot fire while a call holds the interpreter (as
    TVM's RPC client did with a server killed mid-session): the pool thread waiting on it hung, and every
    measurement queued behind it. Its hard deadline ends the process, so the thread is free again."""
    from tvm.support.popen_pool import PopenPoolExecutor

    from psdeploy.backends.tvm.ms_build import hard_deadline, send_by_value

    def stuck() -> None:
        import re

        with hard_deadline(2):
            re.match(r"(a+)+$", "a" * 64 + "b")  # backtracks for ages in C without releasing the interpreter

    send_by_value()
    pool = PopenPoolExecutor(max_workers=1, timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(ChildProcessError):
            pool.submit(stuck).result(timeout=120)
        assert pool.submit(lambda: 7).result(timeout=120) == 7  # the same pool thread serves the next one
    finally:
        pool.shutdown()
    assert time.monotonic() - started < 60
