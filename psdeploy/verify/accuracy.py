"""Top-1 on the demo's held-out split: the checkpoint and a deployed artifact must agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.backends import open_artifact
from psdeploy.demo_data import digits_split, top1
from psdeploy.errors import PsdeployError
from psdeploy.load import LoadedModel
from psdeploy.parity import Runner, torch_runner


@dataclass
class AccuracyReport:
    reference_top1: float
    candidate_top1: float
    prediction_agreement: float  # fraction of samples with the same argmax
    samples: int

    @property
    def agree(self) -> bool:
        return self.reference_top1 == self.candidate_top1 and self.prediction_agreement == 1.0


def run_in_batches(runner: Runner, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Every output of ``runner`` over ``x``, ``batch`` samples a call (what a static-batch artifact takes; the
    tail is padded with the last sample, and its outputs dropped)."""
    pad = (-len(x)) % batch
    xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
    calls = [runner(xp[i:i + batch]) for i in range(0, len(xp), batch)]
    return [np.concatenate(outputs)[: len(x)] for outputs in zip(*calls, strict=True)]


def held_out_top1(reference: Runner, candidate: Runner, batch: int = 1) -> AccuracyReport:
    """``batch`` must fit the candidate (1 for static-shape artifacts; the tail is padded)."""
    _, _, x, y = digits_split()
    ref = run_in_batches(reference, x, batch)[0]
    cand = run_in_batches(candidate, x, batch)[0]
    agreement = float((ref.argmax(1) == cand.argmax(1)).mean())
    return AccuracyReport(top1(ref, y), top1(cand, y), agreement, len(x))


def check_top1(directory: Path, loaded: LoadedModel, max_drop: float | None = None) -> dict[str, object]:
    """Demo-family artifacts built for the demo images (32x32) must give the checkpoint's held-out top-1,
    prediction for prediction; a reduced-precision one (``max_drop``: points) may lose that much top-1."""
    runner = open_artifact(directory)
    report = held_out_top1(torch_runner(loaded.model), runner.run, runner.batch)
    drop = 100 * (report.reference_top1 - report.candidate_top1)
    if max_drop is None and not report.agree:
        raise PsdeployError(f"{runner.description}: held-out top-1 {report.candidate_top1:.4f} differs from the "
                            f"checkpoint's {report.reference_top1:.4f} (agreement {report.prediction_agreement:.4f})")
    if max_drop is not None and drop > max_drop:
        raise PsdeployError(f"{runner.description}: held-out top-1 {report.candidate_top1:.4f} is {drop:.2f} points "
                            f"below the checkpoint's {report.reference_top1:.4f}; expected at most {max_drop:g} "
                            f"(--max-top1-drop lowers the gate)")
    return {"split": "sklearn digits held-out (25%, seed 0)", "samples": report.samples,
            "checkpoint_top1": report.reference_top1, "artifact_top1": report.candidate_top1,
            "prediction_agreement": report.prediction_agreement,
            **({"max_top1_drop": max_drop} if max_drop is not None else {})}
