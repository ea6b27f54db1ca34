"""A psdeploy bundle's runner, ``python BUNDLE/run.py``: TVM's runtime alone and numpy, nothing else.

Copied into every bundle as ``run.py``; it must not import psdeploy (nor click, pydantic, tvm): the
server it runs on has a Python with numpy, a GPU driver perhaps, and the bundle. It checks every file
the manifest lists against its sha256 before anything is loaded and loads no other file, opens each
module with ``libtvm_runtime`` through ``tvm_ffi`` (never ``libtvm_compiler``), checks each against the
expected outputs recorded in the bundle (max|err| / max|ref| <= its tolerance), and times the
artifacts of each group interleaved as ``psdeploy bench`` does: rounds in rotated order, each
artifact's turn one untimed run then a block of timed runs, over several loads (every module opened
anew, the opening order alternating), the device synchronised after each run; where torch is installed,
the bundle's eager-PyTorch layer cases too (cuDNN on a GPU). Bad input: one line, ``error: ...``, exit 2;
a failed check: one line, exit 1.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "psdeploy.bundle/1"
RESULTS_FORMAT = "psdeploy.bundle-results/1"
MANIFEST = "manifest.json"
KDL = {"cpu": 1, "cuda": 2}  # DLPack device types
POOLED_ALLOCATOR = 2
ATTR_EXISTS, ATTR_NAME = 0, 5  # TVM device attributes
NOISY_CV_PCT = 10.0  # as psdeploy bench flags it
MIN_ROUNDS = 5  # timed rounds per load, at least: a load's own median and ratio need that many


class BundleError(Exception):
    """Bad input (exit 2) or, with ``code=1``, a failed check."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def regenerate(spec: dict) -> np.ndarray:
    """A float32 array from its seed (numpy's PCG64): inputs, and seeded weights that are not shipped."""
    rng = np.random.Generator(np.random.PCG64(int(spec["seed"])))
    values = rng.standard_normal(tuple(spec["shape"]), dtype=np.float32)
    values *= np.float32(spec.get("std", 1.0))
    values += np.float32(spec.get("mean", 0.0))
    if "rows" in spec:  # a batch of the first few samples repeated: each row's output known from a batch-1 run
        values = values[np.arange(spec["rows"]) % values.shape[0]]
    return values


def sampled(size: int, count: int) -> np.ndarray:
    """``count`` distinct flat positions spread over an output of ``size`` values (multiplication by a prime is a
    bijection modulo any smaller size): where large outputs are checked, so expected outputs stay small."""
    return (np.arange(min(count, size), dtype=np.int64) * 2654435761) % size


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Bundle:
    """The manifest, and the files it lists: each inside the bundle, a plain file, of its recorded sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / MANIFEST
        if not path.is_file():
            raise BundleError(f"{root}: not a psdeploy bundle (no {MANIFEST})")
        try:
            self.manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: unreadable manifest ({exc.__class__.__name__}); expected JSON") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise BundleError(f"{path}: not a {FORMAT} manifest")
        self.files: dict[str, dict] = self.manifest["files"]

    def check_python(self) -> None:
        wanted = self.manifest["python"]
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if here != wanted:
            raise BundleError(f"{self.root}: built for Python {wanted} (its tvm_ffi wheel is "
                              f"cp{wanted.replace('.', '')}), this is Python {here}; run it with python{wanted}, or rebuild with "
                              f"'psdeploy bundle ... --python {here}'")

    def check_files(self) -> None:
        for name in self.files:
            self.path(name, check=True)

    def path(self, name: str, check: bool = False) -> Path:
        """The listed file ``name``; anything unlisted, outside the bundle, or a link is refused."""
        if name not in self.files:
            raise BundleError(f"{self.root / MANIFEST}: {name} is not listed with its sha256; the runner loads "
                              f"listed files only")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise BundleError(f"{self.root / MANIFEST}: {name} is not a path inside the bundle")
        path = self.root / rel
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{path}: missing (or not a plain file); the bundle is incomplete, copy it again")
        if check:
            entry = self.files[name]
            if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["sha256"]:
                raise BundleError(f"{path}: altered (its sha256 differs from the manifest's); copy the bundle again")
        return path


class Runtime:
    """TVM's runtime alone: tvm_ffi from the bundled wheel, then libtvm_runtime (and its CUDA part)."""

    def __init__(self, bundle: Bundle, cuda: bool, scratch: Path) -> None:
        runtime = bundle.manifest["runtime"]
        for name in runtime["wheels"]:  # tvm_ffi and typing_extensions: pure zip archives, unpacked, not installed
            with zipfile.ZipFile(bundle.path(name)) as wheel:
                wheel.extractall(scratch)
        sys.path.insert(0, str(scratch))
        import tvm_ffi

        self.ffi = tvm_ffi
        ctypes.CDLL(str(bundle.path(runtime["libtvm_runtime"])), mode=ctypes.RTLD_GLOBAL)
        if cuda:
            self._load_cuda(bundle, runtime)
        get = tvm_ffi.get_global_func
        self._alloc, self._copy = get("runtime.TVMTensorAllocWithScope"), get("runtime.TVMTensorCopyFromTo")
        self._sync, self._attr = get("runtime.Device_StreamSync"), get("runtime.GetDeviceAttr")
        self.threads = int(get("runtime.NumThreads")())
        if cuda and not self._attr(KDL["cuda"], 0, ATTR_EXISTS):
            raise BundleError(f"{bundle.root}: holds CUDA modules and no CUDA GPU is visible here; run it on the "
                              f"GPU server")

    @staticmethod
    def _load_cuda(bundle: Bundle, runtime: dict) -> None:
        try:
            ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            raise BundleError(f"{bundle.root}: holds CUDA modules and this machine has no NVIDIA driver "
                              f"(libcuda.so.1); run it on the GPU server") from None
        ctypes.CDLL(str(bundle.path(runtime["libcudart"])), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(bundle.path(runtime["libtvm_runtime_cuda"])), mode=ctypes.RTLD_GLOBAL)

    def device(self, kind: str):
        return self.ffi.device(kind, 0)

    def device_name(self, kind: str) -> str:
        if kind == "cuda":
            return str(self._attr(KDL["cuda"], 0, ATTR_NAME))
        model = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")] \
            if Path("/proc/cpuinfo").is_file() else []
        return model[0].split(":", 1)[1].strip() if model else platform.processor() or platform.machine()

    def put(self, array: np.ndarray, device):
        """A copy of ``array`` in memory the runtime allocated (aligned as its kernels assume) on ``device``."""
        host = self.ffi.from_dlpack(np.ascontiguousarray(array))
        out = self._alloc(self.ffi.Shape(array.shape), self.ffi.dtype(str(array.dtype)), device, None)
        self._copy(host, out)
        return out

    def get(self, tensor) -> np.ndarray:
        if tensor.device.dlpack_device_type() != KDL["cpu"]:
            host = self._alloc(tensor.shape, tensor.dtype, self.device("cpu"), None)
            self._copy(tensor, host)
            tensor = host
        return np.array(np.from_dlpack(tensor))

    def sync(self, device) -> None:
        self._sync(device, 0)


class Artifact:
    """One bundled module, opened anew: its weights (read or regenerated once per group: ``cache``) copied to the
    device, ``run()`` one synchronised call on its first input."""

    def __init__(self, bundle: Bundle, runtime: Runtime, entry: dict, cache: dict) -> None:
        self.entry, self.runtime = entry, runtime
        self.name = entry["name"]
        self.dev = runtime.device(entry["device"])
        module = runtime.ffi.load_module(str(bundle.path(entry["module"])))
        self.vm = module["vm_load_executable"]()
        init = [KDL[entry["device"]], 0, POOLED_ALLOCATOR]
        if entry["device"] != "cpu":
            init += [KDL["cpu"], 0, POOLED_ALLOCATOR]  # shape functions run on the CPU
        self.vm["vm_initialization"](*init)
        self.main = self.vm["main"]
        if self.name not in cache:
            cache[self.name] = weights(bundle, entry)
        self.weights = [runtime.put(w, self.dev) for w in cache[self.name]]
        self.x = runtime.put(regenerate(entry["inputs"][0]), self.dev)

    def __call__(self, x=None):
        out = self.main(self.x if x is None else x, *self.weights)
        self.runtime.sync(self.dev)
        return out

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        out = self(self.runtime.put(x, self.dev))
        return [self.runtime.get(o) for o in (out if isinstance(out, self.runtime.ffi.Array) else [out])]


def weights(bundle: Bundle, entry: dict) -> list[np.ndarray]:
    """Shipped weights (the npz file, its hash checked with every file), or seeded ones regenerated and
    checked against the hash recorded where they were generated."""
    spec = entry["weights"]
    if "file" in spec:
        with np.load(bundle.path(spec["file"]), allow_pickle=False) as npz:
            return [npz[f"w{i}"] for i in range(spec["count"])]
    out = []
    for i, tensor in enumerate(spec["regenerate"]):
        values = regenerate(tensor)
        if digest(values) != tensor["sha256"]:
            raise BundleError(f"{entry['name']}: seeded weight w{i} regenerated with numpy {np.__version__} differs "
                              f"from the one the bundle was built with; rebuild it with --ship-weights")
        out.append(values)
    return out


def check(bundle: Bundle, artifact: Artifact) -> dict:
    """The artifact's outputs on the recorded inputs beside the expected ones: psdeploy's parity rule."""
    entry = artifact.entry
    worst = 0.0
    with np.load(bundle.path(entry["expected"]), allow_pickle=False) as expected:
        for k, spec in enumerate(entry["inputs"]):
            x = regenerate(spec)
            if digest(x) != spec["sha256"]:
                raise BundleError(f"{entry['name']}: input {k} regenerated with numpy {np.__version__} differs from "
                                  f"the one its expected outputs were computed on")
            for i, got in enumerate(artifact.outputs(x)):
                key = f"x{k}_out{i}"
                ref, shape, max_ref = expected[key], tuple(expected[f"{key}_shape"]), float(expected[f"{key}_maxabs"])
                if got.shape != shape or not np.all(np.isfinite(got)):
                    raise BundleError(f"{entry['name']}: output {i} is {got.shape} "
                                      f"{'finite' if np.all(np.isfinite(got)) else 'not finite'}, expected finite "
                                      f"{shape}", code=1)
                got = got.ravel()[sampled(got.size, ref.size)] if ref.size < got.size else got.ravel()
                worst = max(worst, float(np.max(np.abs(got - ref.ravel())) / max(max_ref, 1e-30)))
    if worst > entry["tolerance"]:
        raise BundleError(f"{entry['name']}: max|err|/max|ref| {worst:.2e} exceeds {entry['tolerance']:.0e} against "
                          f"the outputs recorded where it was built", code=1)
    return {"rel_err": worst, "tolerance": entry["tolerance"], "inputs": len(entry["inputs"])}


def _once(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def _settled(history: list[float], window: int, pct: float = 5.0) -> bool:
    if len(history) < 2 * window:
        return False
    prev, last = np.median(history[-2 * window:-window]), np.median(history[-window:])
    return abs(last - prev) / prev * 100 < pct


def rotated(items: list, k: int) -> list:
    shift = k % len(items)
    return items[shift:] + items[:shift]


def time_group(runs: dict, rounds: int, timing: dict) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """One load: warm-up until settled (or its cap), then ``rounds`` rounds, each case one untimed run and a
    block of timed runs per round, the order rotated from round to round. Per case: each round's figure (its
    block's median), and every timed run."""
    names = list(runs)
    warm = {n: [] for n in names}
    window = max(3, timing["warmup"] // 2)
    for k in range(timing["max_warmup"]):
        for n in names:
            warm[n].append(_once(runs[n]))
        if k + 1 >= timing["warmup"] and all(_settled(warm[n], window) for n in names):
            break
    per_round = {n: [] for n in names}
    samples = {n: [] for n in names}
    for k in range(rounds):
        for n in rotated(names, k):
            runs[n]()
            block = [_once(runs[n]) for _ in range(timing["block"])]
            samples[n] += block
            per_round[n].append(float(np.median(block)))
    return per_round, samples


def summary(samples_by_load: list[list[float]], rounds_by_load: list[list[float]],
            first_by_load: list[list[float]]) -> dict:
    """As ``psdeploy bench`` pools loads: latency statistics of every timed run, the ratio to the group's first
    case as the median of per-round ratios with its p10-p90 band, and each load's median and ratio."""
    every = np.array([s for load in samples_by_load for s in load], dtype=np.float64)
    mean = float(every.mean())
    cv = float(every.std(ddof=1) / mean * 100) if len(every) > 1 and mean > 0 else 0.0
    ratios = [np.array(a) / np.array(b) for a, b in zip(rounds_by_load, first_by_load)]
    pooled = np.concatenate(ratios)
    return {"stats": {"iterations": len(every), "median_ms": float(np.median(every)),
                      "p90_ms": float(np.percentile(every, 90)), "p99_ms": float(np.percentile(every, 99)),
                      "min_ms": float(every.min()), "mean_ms": mean, "cv_pct": cv, "noisy": cv > NOISY_CV_PCT},
            "rounds": sum(len(r) for r in rounds_by_load),
            "ratio": float(np.median(pooled)), "ratio_p10": float(np.percentile(pooled, 10)),
            "ratio_p90": float(np.percentile(pooled, 90)), "load_ratios": [float(np.median(r)) for r in ratios],
            "load_medians_ms": [float(np.median(load)) for load in samples_by_load]}


def _timing(bundle: Bundle, args) -> tuple[dict, int, int]:
    timing = dict(bundle.manifest["timing"])
    if args.warmup is not None:
        timing["warmup"] = args.warmup
    iters, loads = args.iters or timing["iters"], args.loads or timing["loads"]
    if iters < loads:
        raise BundleError(f"--iters {iters}: fewer timed rounds than --loads {loads}; expected at least one per load")
    return timing, iters, loads


def within(seconds: float, round_s: float, timing: dict, iters: int, loads: int) -> tuple[dict, int]:
    """Warm-up and timed rounds cut to fit ``seconds`` (rounds of ``round_s`` each), never below
    ``MIN_ROUNDS`` timed rounds per load: a GPU run has a wall-clock limit, and untuned kernels are slow."""
    affordable = int(0.9 * seconds / max(round_s, 1e-9))
    warmup = max(1, min(timing["max_warmup"], affordable // (4 * loads)))
    timing = {**timing, "warmup": min(timing["warmup"], warmup), "max_warmup": warmup}
    return timing, max(loads * MIN_ROUNDS, min(iters, affordable - loads * warmup))


def time_loads(entries: list[dict], open_case, bundle: Bundle, args, say,
               seconds: float | None = None) -> dict[str, dict]:
    """The group timed over its loads, every case opened anew in each (the opening order rotated); with
    ``seconds``, its rounds fitted to that time from one round's cost."""
    timing, iters, loads = _timing(bundle, args)
    asked = iters
    names = [e["name"] for e in entries]
    rounds: dict[str, list[list[float]]] = {n: [] for n in names}
    samples: dict[str, list[list[float]]] = {n: [] for n in names}
    for k in range(loads):
        opened = {e["name"]: open_case(e) for e in rotated(entries, k)}
        if k == 0 and seconds is not None:
            for n in names:
                opened[n]()  # a first run, untimed
            round_s = sum((1 + timing["block"]) * _once(opened[n]) for n in names) / 1e3
            timing, iters = within(seconds, round_s, timing, iters, loads)
        share = iters // loads + (k < iters % loads)
        per_round, timed = time_group({n: opened[n] for n in names}, share, timing)
        del opened
        for n in names:
            rounds[n].append(per_round[n])
            samples[n].append(timed[n])
        say(f"group {entries[0]['group']}: load {k + 1}/{loads} timed ({share} rounds)")
    return {n: {**summary(samples[n], rounds[n], rounds[names[0]]), "rounds_asked": asked} for n in names}


class Budget:
    """The timing's wall-clock budget, shared out over the groups still to time when each starts."""

    def __init__(self, seconds: float | None, groups: int) -> None:
        self.end = None if seconds is None else time.perf_counter() + seconds
        self.left = groups

    def share(self) -> float | None:
        if self.end is None:
            return None
        seconds = max(0.0, self.end - time.perf_counter()) / max(self.left, 1)
        self.left -= 1
        return seconds


def run_group(bundle: Bundle, runtime: Runtime, entries: list[dict], args, say, budget: Budget) -> list[dict]:
    """Each artifact checked once, then the group timed."""
    checks, cache = {}, {}
    for entry in entries:
        checks[entry["name"]] = check(bundle, Artifact(bundle, runtime, entry, cache))
        say(f"{entry['name']}: matches its expected outputs (max|err|/max|ref| {checks[entry['name']]['rel_err']:.1e})")
    stats = time_loads(entries, lambda e: Artifact(bundle, runtime, e, cache), bundle, args, say, budget.share())
    return [{**{k: v for k, v in e.items() if k not in ("weights", "inputs", "expected", "module")},
             "parity": checks[e["name"]], **stats[e["name"]]} for e in entries]


def torch_case(entry: dict, torch):
    """A layer case in eager PyTorch (cuDNN on a GPU) on random weights: a 3x3 conv at its dilation, or the
    released PSConv, ``gwconv(x) + conv(x) + gwconv_shift(swap_halves(x))`` as psdeploy.arch.psconv has it."""
    spec, conv = entry["torch"], torch.nn.functional.conv2d
    device = torch.device(entry["device"])
    generator = torch.Generator().manual_seed(0)
    c, stride, dilation = spec["channels"], spec["stride"], spec["dilation"]
    x = torch.randn(*entry["input_shape"], generator=generator).to(device)

    def weight(groups: int):
        return (torch.randn(c, c // groups, 3, 3, generator=generator) * (2 / (9 * c / groups)) ** 0.5).to(device)

    if spec["op"] == "conv":
        w = weight(1)

        def forward():
            return conv(x, w, None, stride, dilation, dilation)
    else:
        parts = spec["parts"]
        grouped, shifted, dense = weight(parts), weight(parts), weight(1)
        n, _, h, wd = x.shape

        def forward():
            swapped = x.reshape(n, 1, 2, c // 2, h, wd).flip(2).reshape(n, c, h, wd)
            return (conv(x, grouped, None, stride, dilation, dilation, 1, parts) + conv(x, dense, None, stride, 1)
                    + conv(swapped, shifted, None, stride, 2 * dilation, 2 * dilation, 1, parts))

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run() -> None:
        with torch.inference_mode():
            forward()
        sync()

    return run


def run_torch(bundle: Bundle, entries: list[dict], args, say, budget: Budget) -> tuple[list[dict], str | None]:
    """The bundle's eager-PyTorch layer cases, where torch is installed (and a GPU, for a GPU bundle's);
    else none, and why."""
    try:
        import torch
    except ImportError:
        return [], "torch is not installed here"
    if any(e["device"] == "cuda" for e in entries) and not torch.cuda.is_available():
        return [], f"torch {torch.__version__} sees no CUDA GPU"
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for group in dict.fromkeys(e["group"] for e in entries):
        members = [e for e in entries if e["group"] == group]
        stats = time_loads(members, lambda e: torch_case(e, torch), bundle, args, say, budget.share())
        results += [{**e, "parity": None, "runs_on": f"torch {torch.__version__}", **stats[e["name"]]}
                    for e in members]
    return results, None


def write_json(path: Path, data: dict, force: bool) -> None:
    """All or nothing: a temporary beside ``path``, renamed into place."""
    if path.exists() and not force:
        raise BundleError(f"--json {path}: already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def environment(runtime: Runtime, devices: list[str]) -> dict:
    """The fingerprint ``psdeploy bench`` records, from what this server has (no psdeploy here)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    packages = {"numpy": np.__version__, "apache-tvm-ffi": runtime.ffi.__version__}
    return {"cpu_model": runtime.device_name("cpu"),
            "cpu_flags": " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags),
            "cores": os.cpu_count(), "threads": runtime.threads,
            "governor": governor.read_text().strip() if governor.is_file() else "unreadable",
            "gpu": runtime.device_name("cuda") if "cuda" in devices else "none", "os": platform.platform(),
            "python": platform.python_version(), "packages": packages}


def loaded_libraries() -> list[str]:
    """The shared libraries this process has mapped (Linux): proof of what the runtime loaded."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    return sorted({line.split()[-1] for line in maps.read_text().splitlines() if ".so" in line.split()[-1]})


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description="Check and time a psdeploy bundle with TVM's runtime alone.")
    p.add_argument("--json", type=Path, default=Path("bundle-results.json"), help="results file (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--iters", type=int, help="timed rounds per group, over all loads (default: the bundle's)")
    p.add_argument("--loads", type=int, help="fresh opens of every module per group (default: the bundle's)")
    p.add_argument("--warmup", type=int, help="minimum warm-up rounds (default: the bundle's)")
    p.add_argument("--budget-s", type=float, help="seconds for all the timing, shared out over the groups (rounds "
                   "cut to fit, at least 5 per load; 0: no limit; default: the bundle's)")
    p.add_argument("--threads", type=int, help="TVM CPU threads (default: TVM's, one per core)")
    p.add_argument("--check-only", action="store_true", help="check every artifact's outputs, time nothing")
    args = p.parse_args(argv)
    if args.budget_s is not None and not (args.budget_s >= 0 and np.isfinite(args.budget_s)):
        raise BundleError(f"--budget-s {args.budget_s}: expected seconds, 0 or more")
    for name in ("iters", "loads", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BundleError(f"--{name} {value}: expected a whole number of at least 1")
    return args


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    root = root or Path(__file__).resolve().parent
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"run.py: {line} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="psdeploy-bundle-"))
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        bundle = Bundle(root)
        bundle.check_python()
        bundle.check_files()
        say(f"{len(bundle.files)} files match the manifest's sha256")
        if args.threads:
            os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when the runtime's thread pool starts
        entries = bundle.manifest["artifacts"]
        devices = sorted({e["device"] for e in entries})
        runtime = Runtime(bundle, "cuda" in devices, scratch)
        results = []
        groups = list(dict.fromkeys(e["group"] for e in [*entries, *bundle.manifest.get("torch", [])]))
        budget_s = args.budget_s if args.budget_s is not None else bundle.manifest["timing"].get("budget_s")
        budget = Budget(budget_s or None, len(groups))
        for group in dict.fromkeys(e["group"] for e in entries):
            members = [e for e in entries if e["group"] == group]
            if args.check_only:
                results += [{"name": e["name"], "parity": check(bundle, Artifact(bundle, runtime, e, {}))}
                            for e in members]
                say(f"group {group}: {len(members)} checked")
            else:
                results += run_group(bundle, runtime, members, args, say, budget)
        torch_results, torch_skipped = [], None
        if bundle.manifest.get("torch") and not args.check_only:
            torch_results, torch_skipped = run_torch(bundle, bundle.manifest["torch"], args, say, budget)
        data = {"format": RESULTS_FORMAT, "bundle": bundle.manifest["name"], "report": bundle.manifest.get("report"),
                "torch": torch_results, "torch_skipped": torch_skipped,
                "environment": environment(runtime, devices), "loaded_libraries": loaded_libraries(),
                "wall_s": time.perf_counter() - started, "artifacts": results}
        write_json(args.json, data, args.force)
        say(f"results written to {args.json}")
        return 0
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
