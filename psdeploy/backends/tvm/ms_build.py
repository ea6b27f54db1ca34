"""What MetaSchedule's worker processes run, importing only TVM: build a candidate, measure one.

MetaSchedule's default build function imports ``tvm.s_tir.tensor_intrin``, which parses every
vendor's tensor intrinsics (ROCm, CUDA MMA, ...) through TVMScript: ~30 s of CPU per builder
process on these machines, before any real work. fp32 schedules of our graphs use no tensor
intrinsics, so this builds exactly as the default does, minus that import. The functions
travel to the workers by value (``cloudpickle``), so a worker never imports psdeploy (its
API, ONNX tooling, ...): a worker starts in the time it takes to import TVM.

Measuring processes run as many TVM threads as the target names: TVM's runtime reads
``TVM_NUM_THREADS`` once, when its thread pool starts, and without it starts one thread per
physical core as it guesses them (one on a 2-vCPU machine), so every candidate was timed on
one thread whatever ``num-cores`` said. A local worker sets it before its pool starts; an RPC
server has its own environment, so its count is read and a mismatch refused.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from collections.abc import Iterator


def build_candidate(mod, target, _params):
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def build_and_export(mod, target) -> str:
    """The path of a tar holding the built candidate (what MetaSchedule's runners load or upload)."""
    import os
    import tempfile

    from tvm.support.tar import tar

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod." + tar.output_format)
    build_candidate(mod, target, None).export_library(path, fcompile=tar)
    return path


SERVER_FAULT = "server fault"  # no session, upload or answer: the server, not the candidate, failed
THREADS_MISMATCH = "threads mismatch"


def running_threads() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def threads_initializer(threads: int):
    """A worker initializer: its TVM thread pool will run ``threads`` threads."""
    def initialize() -> None:
        import os

        os.environ["TVM_NUM_THREADS"] = str(threads)

    return initialize


def checked_local_evaluator(threads: int):
    """MetaSchedule's local evaluation, refusing to time on another thread count than the target's."""
    def evaluate(rt_mod, device, evaluator_config, repeated_args) -> list[float]:
        from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

        running = running_threads()
        if running != threads:
            raise RuntimeError(f"{THREADS_MISMATCH}: the measuring process runs {running} TVM threads, "
                               f"the target names {threads}")
        return run_evaluator_common(rt_mod, device, evaluator_config, repeated_args)

    return evaluate


@contextlib.contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Ends this worker process ``seconds`` from now unless the block has finished.

    The worker's own timeout is a Python timer thread, which never runs while a call into TVM's RPC
    client holds the interpreter (seen with a server killed mid-session): the process then hung, and
    so did the pool thread waiting on it, and every measurement queued behind. SIGALRM's default
    action ends the process in the kernel, so the waiting side sees its worker exit."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, math.ceil(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)


def server_session(rpc_config, threads: int | None, request_timeout_s: float = 30.0):
    """A session on a free server of the tracker, checked to run ``threads`` TVM threads. The request
    has a deadline: the tracker queues it while no server is free, forever once none is left."""
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(request_timeout_s)  # the tracker's Python socket; the session's own is TVM's
    try:
        session = rpc_config.connect_server()
    finally:
        socket.setdefaulttimeout(previous)
    running = int(session.get_function("runtime.NumThreads")())
    if threads and running != threads:
        raise RuntimeError(f"{THREADS_MISMATCH}: a server under key {rpc_config.tracker_key} runs {running} "
                           f"TVM threads where the target names {threads}; start the servers with "
                           f"TVM_NUM_THREADS={threads}")
    return session


def measure_on_server(rpc_config, threads: int | None, evaluator_config, artifact_path: str, device_type: str,
                      args_info, deadline_s: float) -> list[float]:
    """Upload one built candidate to a server of the tracker and time it there, this process ending
    after ``deadline_s`` whatever it waits on. Failures before the kernel runs say ``SERVER_FAULT``:
    the fleet, not the candidate, is at fault."""
    import os

    from tvm.s_tir.meta_schedule.runner import rpc_runner
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    remote = os.path.basename(artifact_path)
    with hard_deadline(deadline_s):
        try:
            session = server_session(rpc_config, threads)
            device = session.device(device_type, 0)
            module = rpc_runner.default_upload_module(session, artifact_path, remote)
        except Exception as exc:  # sockets, TVM's RPC errors, a tracker that hands out a dead server
            if THREADS_MISMATCH in str(exc):
                raise
            lines = str(exc).strip().splitlines()
            raise RuntimeError(f"{SERVER_FAULT}: {lines[-1] if lines else type(exc).__name__}") from None
        try:
            arguments = rpc_runner.default_alloc_argument(session, device, args_info, 1)
            return run_evaluator_common(module, device, evaluator_config, arguments)
        finally:
            try:
                rpc_runner.default_cleanup(session, remote)
            except Exception:  # the server went away while running: the result says so already
                pass


def server_threads(rpc_config, deadline_s: float) -> int:
    """How many TVM threads a server of the tracker runs, this process ending after ``deadline_s``."""
    with hard_deadline(deadline_s):
        return int(server_session(rpc_config, None).get_function("runtime.NumThreads")())


def send_by_value() -> None:
    """Pickle this module's functions by value, so worker processes need not import psdeploy."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
