"""Tuning runs on one small PSConv layer: a deadline stops cleanly with its records kept and the next
run resumes; the phases add up; builder workers live across batches; local measurements run the target's
thread count. (Measuring on RPC servers: test_tvm_fleet.py.)"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from psdeploy.backends import parse_target
from psdeploy.errors import PsdeployError
from tests.conftest import REPO

pytest.importorskip("tvm")

SERVERS_UP_S = 120


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """One 16-channel PSConv layer lowered for llvm (a handful of small tasks)."""
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.export.onnx_export import export_to_file
    from psdeploy.report.cases import LayerSpec, layer_cases

    spec = LayerSpec(channels=16, size=9, stride=1, batch=1)
    case = layer_cases(spec, ["grouped"], reference_cases=("plain",))[-1]
    path = tmp_path_factory.mktemp("layer") / "layer.onnx"
    export_to_file(case.module, path, spec.shape, ["y"])
    target = parse_target("llvm")
    return lower(import_onnx(path, spec.shape), target), target


def _stale_log_files() -> list[str]:
    """Log files MetaSchedule's loggers still write to in directories that no longer exist."""
    return [h.baseFilename for name in list(logging.root.manager.loggerDict) if name.startswith("tvm.s_tir")
            for h in logging.getLogger(name).handlers
            if isinstance(h, logging.FileHandler) and not Path(h.baseFilename).parent.exists()]


def _run_seconds(record) -> float:
    return sum(float(s) for s in record.run_secs)


def _record_lines(db_root: Path, target) -> int:
    from psdeploy.backends.tvm.tuning_db import RECORDS

    path = db_root / target.key / RECORDS
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_deadline_stops_after_the_batch_in_flight_and_a_rerun_resumes(tmp_path, layer, monkeypatch) -> None:
    """The clock jumps past the deadline during the first batch: tuning returns normally (no error, no
    interrupt) with that batch's records stored, and the next run tunes only the tasks it had not reached."""
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = layer
    tasks = len(tuning.plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), 1).tasks)
    jump = [0.0]

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return time.perf_counter() + jump[0]

    def expire(trials: int) -> None:
        jump[0] = 1e9

    monkeypatch.setattr(tuning, "time", Clock)
    _, summary = tuning.tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=2 * tasks,
                             time_s=3600.0, on_batch=expire)
    assert summary.stopped_by == "deadline" and summary.batch == 2
    assert summary.trials_measured == 2 == _record_lines(tmp_path / "db", target)
    assert set(summary.phase_s) == {"setup", "search", "build", "run", "update"}
    assert not _stale_log_files()  # the next tune in this process (or an RPC runner) logs without failing
    assert min(summary.phase_s.values()) >= 0 and summary.phase_s["build"] > 0 and summary.phase_s["run"] > 0
    assert sum(summary.phase_s.values()) == pytest.approx(summary.tuning_s)
    assert summary.trials_per_min == pytest.approx(60 * 2 / summary.tuning_s)

    monkeypatch.setattr(tuning, "time", time)
    covered = tasks - len(tuning.plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), 2 * tasks).todo)
    assert covered <= 1  # only the task of the batch that ran (if both of its candidates measured)
    _, resumed = tuning.tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=2 * tasks)
    assert resumed.tasks_already_tuned == covered and resumed.tasks_tuned == tasks - covered
    assert resumed.stopped_by in ("trials", "search space") and _record_lines(tmp_path / "db", target) > 2


def test_builder_workers_live_across_batches_and_never_import_psdeploy(layer) -> None:
    """The per-batch cost removed: one worker process serves every batch, and the build function
    reaches it by value, so it never imports psdeploy (the API, ONNX tooling, ...)."""

    import tvm
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm.measure import PhaseClock, pooled_builder

    mod, target = layer
    tvm_target = tvm.target.Target(target.tvm_target)
    task = ms.relax_integration.extract_tasks(mod, tvm_target)[0]
    clock = PhaseClock()
    builder = pooled_builder(clock, workers=1)
    try:
        candidate = ms.builder.BuilderInput(task.dispatched[0], tvm_target)
        first = builder.build([candidate])
        worker = builder.pool.submit(os.getpid).result()
        second = builder.build([candidate, candidate])
        assert builder.pool.submit(os.getpid).result() == worker
        assert all(r.error_msg is None and Path(r.artifact_path).is_file() for r in [*first, *second])
        imported = builder.pool.submit(lambda: [m for m in sys.modules if m.split(".")[0] == "psdeploy"])
        assert imported.result() == [] and clock.seconds["build"] > 0
    finally:
        builder.shutdown()


def test_pruned_database_keeps_each_workloads_best_and_a_build_starts_from_it(tmp_path, layer) -> None:
    """Prune keeps one record per workload, the fastest; an untuned build from the pruned copy schedules
    every task from it; a destination holding a database, or a source that is none, is refused; a record
    MetaSchedule cannot replay is set aside instead of making the database unopenable."""
    from psdeploy import api
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import RECORDS, UNREPLAYABLE, TuningDatabase

    mod, target = layer
    tasks = len(tuning.plan_tuning(mod, target, TuningDatabase(tmp_path / "db", target), 1).tasks)
    tuning.tune(mod, target, TuningDatabase(tmp_path / "full", target), trials=4 * tasks)
    [pruned] = api.prune_tuning_db(tmp_path / "full", tmp_path / "best")
    full, best = (TuningDatabase(tmp_path / name, target).open() for name in ("full", "best"))
    measured = {r.workload.mod.script(): r.workload for r in full.get_all_tuning_records()}
    with_a_valid_record = [w for w in measured.values() if full.get_top_k(w, 1)]
    assert 0 < len(with_a_valid_record) <= tasks
    assert pruned.key == target.key and pruned.records_before > pruned.records_after == len(with_a_valid_record)
    for record in best.get_all_tuning_records():
        fastest = min(_run_seconds(r) for r in full.get_top_k(record.workload, 1 << 20))
        assert _run_seconds(record) == pytest.approx(fastest)
    _, summary = tuning.tune(mod, target, TuningDatabase(tmp_path / "best", target), trials=0)
    assert summary.untuned and summary.trials_measured == 0
    assert summary.tasks_already_tuned == len(with_a_valid_record)
    with pytest.raises(PsdeployError, match="already exists; pass --force to replace it"):
        api.prune_tuning_db(tmp_path / "full", tmp_path / "best")
    with pytest.raises(PsdeployError, match="not a psdeploy tuning database"):
        api.prune_tuning_db(tmp_path / "nothing", tmp_path / "out")

    # a record MetaSchedule stored but cannot replay (its trace names a block the workload lacks)
    records = tmp_path / "full" / target.key / RECORDS
    lines = records.read_text().splitlines()
    block = json.loads(lines[3])[1][0][0][0][2][0]  # the first GetSBlock's block name
    lines[3] = lines[3].replace(f'"{block}"', '"no_such_block"')
    records.write_text("\n".join(lines) + "\n")
    db = TuningDatabase(tmp_path / "full", target)
    assert len(db.open()) == len(lines) - 1
    assert db.notes == [f"moved 1 records MetaSchedule cannot replay to {UNREPLAYABLE}"]
    assert (records.parent / UNREPLAYABLE).read_text() == lines[3] + "\n"


def test_a_root_tuned_for_another_target_says_so(tmp_path, layer) -> None:
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    _, target = layer
    TuningDatabase(tmp_path / "db", parse_target("llvm", cores=64)).validate()
    db = TuningDatabase(tmp_path / "db", target)
    db.open()
    assert len(db.notes) == 1 and "holds no records for this target" in db.notes[0]
    assert f"{target.tvm_target['mcpu']}, 64 cores)" in db.notes[0], "what the root holds is named by CPU and cores"


def test_the_committed_database_opens_under_the_target_it_names() -> None:
    """reports/tuning-db is what `compile --tuning-db reports/tuning-db` starts from: every target folder
    must be named after the target its stamp holds, and load in MetaSchedule with one record per workload."""
    from psdeploy.backends.targets import Target
    from psdeploy.backends.tvm.tuning_db import META_NAME, TuningDatabase, stamped_targets

    root = REPO / "reports" / "tuning-db"
    folders = stamped_targets(root)
    assert folders
    for folder in folders:
        spec = Target("tvm", "llvm", json.loads((folder / META_NAME).read_text())["target"])
        db = TuningDatabase(root, spec)
        assert db.directory == folder
        records = db.open().get_all_tuning_records()
        assert records and not db.notes
        assert len({r.workload.mod.script() for r in records}) == len(records)  # pruned: best of each only


def test_local_measurements_run_the_targets_thread_count(monkeypatch) -> None:
    """TVM's runtime starts one thread on a 2-vCPU machine when TVM_NUM_THREADS is unset: the measuring
    worker runs the target's num-cores instead, and a worker on another count refuses to time anything."""
    from psdeploy.backends.tvm.measure import local_runner
    from psdeploy.backends.tvm.ms_build import THREADS_MISMATCH, checked_local_evaluator, running_threads

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)  # the worker inherits no setting from here
    for cores in (1, 2):
        target = parse_target("llvm", cores=cores)
        runner = local_runner(target.threads)
        try:
            assert runner.pool.submit(running_threads).result() == cores
        finally:
            runner.pool.shutdown()
    here = running_threads()
    with pytest.raises(RuntimeError, match=THREADS_MISMATCH):
        checked_local_evaluator(here + 1)(None, None, None, [])


def test_cpu_candidates_are_timed_cold_as_inside_a_network() -> None:
    """Each timed run of a CPU candidate starts with its weights flushed from the caches (one run per
    flush: MetaSchedule's 100 ms minimum would repeat it warm); GPU candidates keep MetaSchedule's timing."""
    from psdeploy.backends.tvm.measure import COLD_RUNS, evaluator_config, local_runner

    runner = local_runner(parse_target("llvm", cores=2).threads)
    try:
        assert runner.evaluator_config == evaluator_config(cpu=True)
    finally:
        runner.pool.shutdown()
    cold = evaluator_config(cpu=True)
    assert cold.enable_cpu_cache_flush and cold.number == 1 and cold.min_repeat_ms == 0 and cold.repeat == COLD_RUNS
    assert not evaluator_config(cpu=False).enable_cpu_cache_flush


def test_gather_tasks_tune_with_no_candidate_reading_out_of_bounds(tmp_path, layer, monkeypatch) -> None:
    """MetaSchedule times kernels on random arguments: a Gather's index buffer filled at random read out of
    bounds and every candidate of every gather task failed. Baked indices leave no argument to fill.
    A handler without a name on MetaSchedule's logger (left by another library) does not stop the run."""
    from psdeploy.backends.tvm import tuning
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    unnamed = logging.NullHandler()
    monkeypatch.setattr(logging.getLogger(tuning.METASCHEDULE_LOGGER), "handlers", [unnamed])
    mod, target = layer
    takes = [gv for gv in mod.get_global_vars() if gv.name_hint.startswith("take")]
    assert takes and all(len(mod[gv].params) == 2 for gv in takes)  # data and output: no index argument
    db = TuningDatabase(tmp_path / "db", target)
    tasks = tuning.plan_tuning(mod, target, db, 1).tasks
    assert any(t.task_name.startswith("take") for t in tasks)
    _, summary = tuning.tune(mod, target, db, trials=len(tasks))
    assert summary.trials_measured >= len(tasks) and summary.tasks_all_failed == []
