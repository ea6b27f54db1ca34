"""A persistent MetaSchedule database that every compile reuses.

Layout: ``ROOT/<target key>/`` holds MetaSchedule's two JSON-lines files plus our
``psdeploy-tuning-db.json`` naming the exact target. Records are keyed by workload
(structural hash of the TIR) and target, so identical layers of ResNet and
PS-ResNet (every 1x1 conv, the stem, the head) share them. MetaSchedule appends a
line per measured record, so an interrupted tune keeps what it measured; psdeploy
never deletes records. A line cut short by a kill is dropped on open (and said);
any other malformed content is refused as corruption. Records MetaSchedule itself stored but
cannot replay when it loads the database (seen after PS-ResNet-50 tuned into ResNet-50's
database: one batch of a reduction's records, whose trace names a block the stored, structurally
equal workload calls otherwise) would make the whole database unopenable: they are found by
bisection, moved to ``unreplayable_records.json`` beside it, and said.

``prune`` keeps the best record of each workload: what rebuilding an artifact needs, and what
a later tune starts its search from, in a few MB where the full history is tens (the folder
committed beside a report).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from psdeploy.backends.targets import Target
from psdeploy.errors import PsdeployError
from psdeploy.fileio import atomic_output, write_atomic

FORMAT = 1
META_NAME = "psdeploy-tuning-db.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
UNREPLAYABLE = "unreplayable_records.json"


@dataclass
class TuningDatabase:
    root: Path
    target: Target
    notes: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.root / self.target.key

    def open(self):
        """Validate (or create) the directory and return MetaSchedule's JSONDatabase over it."""
        from psdeploy.backends.tvm.vnni import register_vnni_intrinsic

        self.validate()
        self._note_other_targets()
        register_vnni_intrinsic()  # int8 records tensorize with it: unknown at load, they would not replay
        try:
            return _json_database(self.directory / WORKLOADS, self.directory / RECORDS)
        except Exception as exc:  # TVM raises RuntimeError/TVMError from C++ parsing
            if self._set_aside_unreplayable():
                return self.open()
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise PsdeployError(f"--tuning-db {self.directory}: corrupted records ({last})") from None

    def _set_aside_unreplayable(self) -> int:
        """Move the record lines MetaSchedule cannot load to ``UNREPLAYABLE``; how many were moved."""
        path = self.directory / RECORDS
        lines = path.read_bytes().splitlines(keepends=True)
        bad = _unloadable(self.directory / WORKLOADS, lines, 0, len(lines))
        if not bad or len(bad) == len(lines):  # nothing singled out, or nothing loads: corruption
            return 0
        with open(self.directory / UNREPLAYABLE, "ab") as aside:
            aside.writelines(lines[i] for i in bad)
        set_aside = set(bad)
        write_atomic(path, b"".join(line for i, line in enumerate(lines) if i not in set_aside), "--tuning-db",
                     force=True)
        self.notes.append(f"moved {len(bad)} records MetaSchedule cannot replay to {UNREPLAYABLE}")
        return len(bad)

    def _note_other_targets(self) -> None:
        """A root that holds records only for other targets (another --mcpu or --num-cores) is
        probably not what the user meant to start from: say which targets it holds."""
        if (self.directory / RECORDS).exists():
            return
        others = [f"{p.name} ({_cpu_and_cores(_stamped_target(p))})" for p in stamped_targets(self.root)
                  if p != self.directory]
        if others:
            self.notes.append(f"{self.root} holds no records for this target ({self.target.key}: "
                              f"{_cpu_and_cores(self.target.tvm_target)}) but holds {', '.join(others)}; on such a "
                              f"CPU give the --mcpu/--num-cores they were tuned with, else tune for this one")

    def validate(self) -> None:
        """Check the stamp and every line; drop a half-written last line left by a kill."""
        d = self.directory
        meta_path = d / META_NAME
        if self.root.exists() and not self.root.is_dir():
            raise PsdeployError(f"--tuning-db {self.root}: is not a directory")
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                raise PsdeployError(f"--tuning-db {d}: {META_NAME} is corrupted (not JSON)") from None
            if meta.get("format") != FORMAT or meta.get("target") != self.target.tvm_target:
                raise PsdeployError(
                    f"--tuning-db {d}: foreign tuning database (made for target {meta.get('target')}, "
                    f"format {meta.get('format')}); expected target {self.target.tvm_target}, format {FORMAT}"
                )
        elif d.exists() and any(d.iterdir()):
            raise PsdeployError(f"--tuning-db {d}: foreign tuning database (no {META_NAME}); "
                                f"point --tuning-db at a directory psdeploy created")
        d.mkdir(parents=True, exist_ok=True)
        if not meta_path.exists():
            write_atomic(meta_path, json.dumps({"format": FORMAT, "target": self.target.tvm_target}, indent=1),
                         "--tuning-db")
        for name in (WORKLOADS, RECORDS):
            self._check_lines(d / name)

    def _check_lines(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise PsdeployError(f"--tuning-db {path}: corrupted at line {number} (not JSON)") from None
            if not isinstance(row, list):
                raise PsdeployError(f"--tuning-db {path}: corrupted at line {number} (not a MetaSchedule record)")
        if tail.strip():
            try:
                json.loads(tail)
            except json.JSONDecodeError:
                write_atomic(path, data[: len(data) - len(tail)], "--tuning-db", force=True)
                self.notes.append(f"dropped a half-written last line of {path.name} (interrupted run)")
                return
            write_atomic(path, data + b"\n", "--tuning-db", force=True)

    def record_counts(self, database, mods) -> list[int]:
        """Valid tuning records already held for each workload (0 when unseen)."""
        counts = []
        for mod in mods:
            if not database.has_workload(mod):
                counts.append(0)
                continue
            workload = database.commit_workload(mod)
            counts.append(len(database.get_top_k(workload, 1 << 20)))
        return counts


def _json_database(workloads: Path, records: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=str(workloads), path_tuning_record=str(records),
                                    module_equality="structural")


def _loads(workloads: Path, lines: list[bytes]) -> bool:
    with tempfile.TemporaryDirectory(prefix="psdeploy-db-") as scratch:
        trial = Path(scratch) / RECORDS
        trial.write_bytes(b"".join(lines))
        try:
            _json_database(workloads, trial)
        except Exception:  # the same C++ errors as in open()
            return False
    return True


def _unloadable(workloads: Path, lines: list[bytes], start: int, stop: int) -> list[int]:
    """Indices in ``lines[start:stop]`` of the records that fail to load, by bisection."""
    if _loads(workloads, lines[start:stop]):
        return []
    if stop - start == 1:
        return [start]
    middle = (start + stop) // 2
    return _unloadable(workloads, lines, start, middle) + _unloadable(workloads, lines, middle, stop)


def stamped_targets(root: Path) -> list[Path]:
    """The per-target folders psdeploy created under ``root``."""
    return sorted(p for p in root.iterdir() if (p / META_NAME).is_file()) if root.is_dir() else []


@dataclass
class PrunedTarget:
    key: str
    records_before: int
    records_after: int  # one per workload that has a valid record
    bytes_after: int


def prune(source: Path, destination: Path, force: bool = False) -> list[PrunedTarget]:
    """Copy the best record of every workload, for every target under ``source``, into a new
    ``destination`` (MetaSchedule's own ``dump_pruned``); all of it or, on error, nothing. An existing
    ``destination`` is refused unless ``force``, then replaced whole."""
    folders = stamped_targets(source)
    if not folders:
        raise PsdeployError(f"{source}: not a psdeploy tuning database (no target folder with {META_NAME})")
    pruned = []
    with atomic_output(destination, "-o", directory=True, force=force) as staging:
        for folder in folders:
            target = Target("tvm", folder.name, _stamped_target(folder))
            source_db, staged_db = TuningDatabase(source, target), TuningDatabase(staging, target)
            if source_db.directory != folder:
                raise PsdeployError(f"{folder}: its stamp names a target whose folder would be {target.key}; "
                                    f"expected a folder psdeploy created")
            full, best = source_db.open(), staged_db.open()
            full.dump_pruned(best)
            pruned.append(PrunedTarget(target.key, len(full), len(best),
                                       sum(p.stat().st_size for p in staged_db.directory.iterdir())))
    return pruned


def _cpu_and_cores(target: dict[str, object]) -> str:
    """How a tuned target reads to a user: its CPU and cores (llvm) or its GPU arch (cuda)."""
    if target.get("kind") == "cuda":
        return f"cuda {target.get('arch')}"
    return f"{target.get('mcpu')}, {target.get('num-cores')} cores"


def _stamped_target(folder: Path) -> dict[str, object]:
    try:
        return json.loads((folder / META_NAME).read_text())["target"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PsdeployError(f"--tuning-db {folder}: {META_NAME} is corrupted (expected JSON naming a target)") from None
