"""Top-1 on the demo's held-out split: the checkpoint and a deployed artifact must agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.backends import open_artifact
from psdeploy.demo_data import CLASSES, IMAGE_SIZE, digits_split, top1
from psdeploy.errors import PsdeployError
from psdeploy.load import LoadedModel
from psdeploy.parity import Runner, torch_runner

DEMO_DATA = (f"the digits demo data (scikit-learn's 8x8 digits upsampled to 3x{IMAGE_SIZE}x{IMAGE_SIZE} images, "
             f"{CLASSES} classes)")


def check_fits_demo(model: str, input_shape: tuple[int, ...], loaded: LoadedModel) -> None:
    """Refuse, in one line and before anything runs, a model the demo data cannot measure: another input
    size, another number of classes, or a backbone with no class scores."""
    cfg = loaded.config
    misfits = []
    if any(d and d != e for d, e in zip(input_shape[1:], (3, IMAGE_SIZE, IMAGE_SIZE))):
        misfits.append(f"takes {'x'.join(str(d or '?') for d in input_shape[1:])} inputs")
    checkpoint = f"its checkpoint {loaded.source} ({cfg.name})"
    if cfg.num_classes is None:
        misfits.append(f"{checkpoint} is a backbone (feature maps, no class scores)")
    elif cfg.num_classes != CLASSES:
        misfits.append(f"{checkpoint} has {cfg.num_classes} classes")
    if cfg.in_chans != 3:
        misfits.append(f"{checkpoint} takes {cfg.in_chans}-channel images")
    if misfits:
        raise PsdeployError(f"{model}: {'; '.join(misfits)}; accuracy measures top-1 on {DEMO_DATA}, which only "
                            f"a model trained on it fits (like models/ps_resnet_digits.pth)")


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


def held_out_top1(reference: Runner, candidate: Runner, batch: int = 1, name: str = "the model") -> AccuracyReport:
    """``batch`` must fit the candidate (1 for static-shape artifacts; the tail is padded)."""
    _, _, x, y = digits_split()
    first = candidate(x[:batch])[0]
    if first.shape[1:] != (CLASSES,):  # an artifact of another network than the checkpoint's: refused at once
        raise PsdeployError(f"{name}: its first output holds {'x'.join(map(str, first.shape[1:]))} values per "
                            f"sample, not the {CLASSES} class scores of {DEMO_DATA}")
    ref = run_in_batches(reference, x, batch)[0]
    cand = run_in_batches(candidate, x, batch)[0]
    agreement = float((ref.argmax(1) == cand.argmax(1)).mean())
    return AccuracyReport(top1(ref, y), top1(cand, y), agreement, len(x))


def check_top1(directory: Path, loaded: LoadedModel, max_drop: float | None = None) -> dict[str, object]:
    """Demo-family artifacts built for the demo images (32x32) must give the checkpoint's held-out top-1,
    prediction for prediction; a reduced-precision one (``max_drop``: points) may lose that much top-1."""
    runner = open_artifact(directory)
    report = held_out_top1(torch_runner(loaded.model), runner.run, runner.batch, runner.description)
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
