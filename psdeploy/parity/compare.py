"""Numerical parity between a reference function and a candidate: the one verification API.

Export, compile and every lowering use it. The criterion is fp32
``max|candidate - reference| / max|reference| <= tolerance`` per output, on several
inputs; cosine similarity and the absolute error are reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.errors import VerificationError

Runner = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class OutputParity:
    name: str
    max_abs_err: float
    max_abs_ref: float
    rel_err: float  # max_abs_err / max_abs_ref: the criterion
    cosine: float

    def passed(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.rel_err)) and self.rel_err <= tolerance


@dataclass
class CaseParity:
    input_shape: tuple[int, ...]
    seed: int
    outputs: list[OutputParity]


@dataclass
class ParityReport:
    candidate: str
    reference: str
    tolerance: float
    cases: list[CaseParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(o.passed(self.tolerance) for c in self.cases for o in c.outputs)

    @property
    def worst(self) -> OutputParity:
        return max((o for c in self.cases for o in c.outputs), key=lambda o: o.rel_err)

    def rows(self) -> list[dict[str, object]]:
        return [
            {"input": "x".join(map(str, c.input_shape)), "seed": c.seed, **asdict(o),
             "ok": o.passed(self.tolerance)}
            for c in self.cases for o in c.outputs
        ]

    def to_dict(self) -> dict[str, object]:
        worst = self.worst
        return {"candidate": self.candidate, "reference": self.reference, "tolerance": self.tolerance,
                "passed": self.passed, "worst_rel_err": worst.rel_err, "worst_cosine": min(
                    o.cosine for c in self.cases for o in c.outputs), "cases": self.rows()}

    def raise_if_failed(self) -> None:
        if not self.passed:
            w = self.worst
            raise VerificationError(
                f"parity check failed: {self.candidate} vs {self.reference}: output {w.name} "
                f"rel err {w.rel_err:.3g} > tolerance {self.tolerance:g} (cosine {w.cosine:.6f})"
            )


def output_parity(name: str, ref: np.ndarray, cand: np.ndarray) -> OutputParity:
    ref64, cand64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    if ref.shape != cand.shape:  # a reshaped or transposed output is wrong, whatever its numbers
        return OutputParity(name, float("inf"), float(np.abs(ref64).max(initial=0)), float("inf"), 0.0)
    err = float(np.abs(cand64 - ref64).max(initial=0))
    scale = float(np.abs(ref64).max(initial=0))
    denom = float(np.linalg.norm(ref64) * np.linalg.norm(cand64))
    cosine = float(ref64 @ cand64 / denom) if denom > 0 else float(err == 0)
    rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
    return OutputParity(name, err, scale, rel, cosine)


def make_input(shape: Sequence[int], seed: int) -> np.ndarray:
    """Image-like input: normalised-pixel range, a different distribution per seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    return x if seed % 2 == 0 else np.clip(x * 1.5 + 0.2, -2.2, 2.7).astype(np.float32)


def compare(
    reference: Runner,
    candidate: Runner,
    shapes: Sequence[tuple[int, ...]],
    output_names: Sequence[str],
    *,
    candidate_name: str,
    reference_name: str,
    tolerance: float = DEFAULT_TOLERANCE,
    seeds: Sequence[int] = (0, 1),
) -> ParityReport:
    """Run both on the same inputs of each shape and seed; report every output."""
    report = ParityReport(candidate_name, reference_name, tolerance)
    for shape in shapes:
        for seed in seeds:
            x = make_input(shape, seed)
            refs, cands = reference(x), candidate(x)
            outputs = [output_parity(n, r, c) for n, r, c in zip(output_names, refs, cands, strict=True)]
            report.cases.append(CaseParity(tuple(shape), seed, outputs))
    return report
