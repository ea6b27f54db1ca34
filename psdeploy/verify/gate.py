"""The reduced-precision accuracy gate: an int8 (or bf16) artifact beside fp32 on samples the quantizer never saw.

Parity at 1e-4 is the wrong question for int8 or bf16; whether the artifact still says what fp32 says
is the right one: the cosine of its outputs to fp32's, sample by sample, and (for classifiers)
how often it picks fp32's class. Below the gate the build fails unless the user lowers it.
"""

from __future__ import annotations

import numpy as np

from psdeploy.backends import OpenedRunner
from psdeploy.backends.int8 import AccuracyGate, GateRecord
from psdeploy.calibration import CalibrationSet, read_calibration
from psdeploy.errors import VerificationError
from psdeploy.parity import Runner, make_input
from psdeploy.verify.accuracy import run_in_batches

SYNTHETIC_SAMPLES = 48  # where no user data is given: int8 (reports) calibrates on three quarters, the gate reads the rest


def synthetic_samples(shape: tuple[int, ...]) -> CalibrationSet:
    """Image-like samples of ``shape``'s C,H,W: what bf16/f16 builds, and reports' reduced-precision cases,
    are gated on when the user gives no data."""
    x = np.concatenate([make_input((1, *shape[1:]), seed) for seed in range(SYNTHETIC_SAMPLES)])
    return read_calibration(x, f"synthetic inputs (make_input seeds 0-{SYNTHETIC_SAMPLES - 1})")


def _per_sample_cosine(refs: list[np.ndarray], cands: list[np.ndarray]) -> np.ndarray:
    """Cosine of each sample's outputs (all of them, flattened together) to the reference's."""
    ref = np.concatenate([r.reshape(len(r), -1) for r in refs], axis=1).astype(np.float64)
    cand = np.concatenate([c.reshape(len(c), -1) for c in cands], axis=1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = (ref * cand).sum(axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1), (ref == cand).all(axis=1).astype(np.float64))


def accuracy_gate(candidate: OpenedRunner, reference: Runner, data: CalibrationSet, gate: AccuracyGate) -> GateRecord:
    """The gate's figures on ``data.held_out``, or a ``VerificationError`` naming the one that failed and the
    option that lowers it."""
    refs = run_in_batches(reference, data.held_out, candidate.batch)
    cands = run_in_batches(candidate.run, data.held_out, candidate.batch)
    cosine = _per_sample_cosine(refs, cands)
    agreement = float((refs[0].argmax(1) == cands[0].argmax(1)).mean()) if refs[0].ndim == 2 else None
    record = GateRecord(samples=len(data.held_out), data=data.source, mean_cosine=float(cosine.mean()), min_cosine=float(cosine.min()),
                        top1_agreement=agreement, gate=gate)
    where = f"{candidate.description} vs fp32 on {record.samples} held-out samples of {data.source}"
    if not record.mean_cosine >= gate.min_cosine:
        raise VerificationError(f"{where}: mean cosine {record.mean_cosine:.4f}; expected >= {gate.min_cosine:g} "
                                f"(--min-cosine lowers the gate)")
    if agreement is not None and not agreement >= gate.min_agreement:
        raise VerificationError(f"{where}: top-1 agreement {agreement:.4f}; expected >= {gate.min_agreement:g} "
                                f"(--min-agreement lowers the gate)")
    return record
