"""Accuracy on the user's own images: the checkpoint (PyTorch) and the artifact side by side.

Images are decoded and preprocessed (the model's recipe) by a worker pool while both models run on
the batch before, so a long run is paced by inference. Classifiers get top-1 and top-5 of each, their
agreement and every image where their top-1 differs; a detector backbone (C2..C5) gets, per output,
the cosine and the max relative error of the artifact to the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from psdeploy.arch.resnet import ResNetConfig
from psdeploy.backends import OpenedRunner
from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.errors import PsdeployError
from psdeploy.images.layouts import ImageSet
from psdeploy.images.loader import load_batches
from psdeploy.images.preprocess import Preprocess
from psdeploy.parity import Runner
from psdeploy.verify.accuracy import run_in_batches

TOP_K = 5
ProgressFn = Callable[[int, int, float], None]  # (images done, images in all, images/s)


@dataclass
class TopK:
    top1: float
    top5: float


@dataclass
class Disagreement:
    """An image whose top-1 class differs between the checkpoint and the artifact (each one's top-5)."""

    file: str
    label: int | None
    checkpoint_top5: list[int]
    artifact_top5: list[int]


@dataclass
class OutputAgreement:
    """A backbone output of the artifact beside the checkpoint's, over every image."""

    name: str
    mean_cosine: float
    min_cosine: float
    max_rel_err: float  # max|artifact - checkpoint| / max|checkpoint|, over all images


@dataclass
class ImageAccuracy:
    artifact: str  # the runner's description
    precision: str  # the artifact's: f32 (an ONNX file, or the manifest's), f16, bf16, int8
    data: str  # what was read, and how it was laid out
    preprocess: Preprocess
    images: int  # measured
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): --skip-bad
    checkpoint_topk: TopK | None = None  # classifiers
    artifact_topk: TopK | None = None
    agreement: float | None = None  # fraction of images with the same top-1 class
    disagreements: list[Disagreement] = field(default_factory=list)
    outputs: list[OutputAgreement] = field(default_factory=list)  # backbones

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def fp32_failure(self) -> str | None:
        """Why an fp32 artifact does not compute the checkpoint's function on these images (None: it does); a
        reduced-precision one is reported, not failed."""
        if self.precision != "f32":
            return None
        if self.disagreements:
            return (f"an fp32 artifact, and its top-1 class differs from the checkpoint's on {len(self.disagreements)} "
                    f"of {self.images} images; expected the same on every image")
        worst = max(self.outputs, key=lambda o: o.max_rel_err, default=None)
        if worst and worst.max_rel_err > DEFAULT_TOLERANCE:
            return (f"an fp32 artifact, and its output {worst.name} is {worst.max_rel_err:.3g} (max|err|/max|ref|) from "
                    f"the checkpoint's; expected at most {DEFAULT_TOLERANCE:g}")
        return None

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["preprocess"] = self.preprocess.model_dump()
        out["preprocess_text"] = self.preprocess.describe()
        out["images_per_s"] = self.images_per_s
        out["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return out


class _Classes:
    """Running top-k tallies of both models over the labelled images."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images
        self.hits = np.zeros((2, 2))  # (checkpoint, artifact) x (top-1, top-5)
        self.same = 0
        self.disagreements: list[Disagreement] = []

    def add(self, indices: list[int], refs: list[np.ndarray], cands: list[np.ndarray]) -> None:
        labels = self.images.labels[indices]
        ref_top, cand_top = _top_k(refs[0]), _top_k(cands[0])
        for row, top in enumerate((ref_top, cand_top)):
            self.hits[row] += ((top[:, 0] == labels).sum(), (top == labels[:, None]).any(axis=1).sum())
        same = ref_top[:, 0] == cand_top[:, 0]
        self.same += int(same.sum())
        self.disagreements += [Disagreement(self.images.name(indices[i]), int(labels[i]), ref_top[i].tolist(),
                                            cand_top[i].tolist()) for i in np.flatnonzero(~same)]

    def fill(self, result: ImageAccuracy) -> None:
        n = max(result.images, 1)
        result.checkpoint_topk = TopK(*(self.hits[0] / n))
        result.artifact_topk = TopK(*(self.hits[1] / n))
        result.agreement = self.same / n
        result.disagreements = self.disagreements


def _top_k(logits: np.ndarray) -> np.ndarray:
    """The ``TOP_K`` best classes of each row, best first (ties: the lower index, as argmax)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]


class _Outputs:
    """Running cosine and error figures of every backbone output."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.cosines: list[list[np.ndarray]] = [[] for _ in names]
        self.max_err = np.zeros(len(names))
        self.max_ref = np.zeros(len(names))

    def add(self, indices: list[int], refs: list[np.ndarray], cands: list[np.ndarray]) -> None:
        for o, (ref, cand) in enumerate(zip(refs, cands, strict=True)):
            r = ref.reshape(len(ref), -1).astype(np.float64)
            c = cand.reshape(len(cand), -1).astype(np.float64)
            norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
            self.cosines[o].append(np.where(norms > 0, (r * c).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0))
            self.max_err[o] = max(self.max_err[o], float(np.abs(r - c).max()))
            self.max_ref[o] = max(self.max_ref[o], float(np.abs(r).max()))

    def fill(self, result: ImageAccuracy) -> None:
        for o, name in enumerate(self.names):
            cos = np.concatenate(self.cosines[o]) if self.cosines[o] else np.ones(1)
            rel = self.max_err[o] / self.max_ref[o] if self.max_ref[o] > 0 else float(self.max_err[o] > 0)
            result.outputs.append(OutputAgreement(name, float(cos.mean()), float(cos.min()), float(rel)))


def check_fits_images(model: str, shape: tuple[int, ...], config: ResNetConfig, source: str,
                      recipe: Preprocess) -> None:
    """An RGB model whose input the recipe's crop makes; refused in one line before any image is read."""
    if config.in_chans != 3:
        raise PsdeployError(f"{model}: its checkpoint {source} takes {config.in_chans}-channel inputs; expected RGB "
                            f"(3 channels) to measure on images")
    side = shape[2:]
    if recipe.crop and all(side) and tuple(side) != (recipe.crop, recipe.crop):
        raise PsdeployError(f"{model}: takes {'x'.join(map(str, side))} inputs, and the preprocessing crops "
                            f"{recipe.crop}x{recipe.crop} ({recipe.describe()}); give --crop (and --resize) to fit it")


def image_accuracy(reference: Runner, candidate: OpenedRunner, images: ImageSet, preprocess: Preprocess, *,
                   precision: str, batch: int, workers: int | None = None, skip_bad: bool = False,
                   progress: ProgressFn | None = None) -> ImageAccuracy:
    """Both models over ``images``, ``batch`` at a time (the artifact in its own batch where that is fixed); a
    file that does not decode stops the run, or with ``skip_bad`` is counted and left out."""
    size = tuple(candidate.input_shape[2:]) if all(candidate.input_shape[2:]) else None
    tally: _Classes | _Outputs = _Classes(images) if images.labelled else _Outputs(candidate.output_names)
    result = ImageAccuracy(candidate.description, precision, images.describe(), preprocess, 0, 0.0)
    started = time.perf_counter()
    for loaded in load_batches(images.files, preprocess, batch, workers, size):
        for index, reason in loaded.bad:
            if not skip_bad:
                raise PsdeployError(f"{images.files[index]}: {reason} (--skip-bad skips such files, and counts them)")
            result.skipped.append((images.name(index), reason))
        if len(loaded.x):
            refs = reference(loaded.x)
            cands = _run(candidate, loaded.x)
            _check_outputs(candidate, refs, cands, images.labelled)
            tally.add(loaded.indices, refs, cands)
            result.images += len(loaded.indices)
        if progress:
            elapsed = time.perf_counter() - started
            progress(result.images + len(result.skipped), len(images.files), result.images / max(elapsed, 1e-9))
    result.seconds = time.perf_counter() - started
    if result.images == 0:
        raise PsdeployError(f"{images.root}: every one of the {len(images.files)} files was skipped as bad; "
                            f"nothing measured")
    tally.fill(result)
    return result


def _run(candidate: OpenedRunner, x: np.ndarray) -> list[np.ndarray]:
    """The artifact over ``x``: at once where its batch is dynamic, else in its batch (the tail padded)."""
    return run_in_batches(candidate.run, x, candidate.input_shape[0] or len(x))


def _check_outputs(candidate: OpenedRunner, refs: list[np.ndarray], cands: list[np.ndarray], labelled: bool) -> None:
    """An artifact of another network than the checkpoint's is refused at the first batch."""
    ref_shapes, cand_shapes = [o.shape[1:] for o in refs], [o.shape[1:] for o in cands]
    if ref_shapes != cand_shapes:
        raise PsdeployError(f"{candidate.description}: outputs of shape {cand_shapes} per image, the checkpoint's "
                            f"{ref_shapes}; expected the network the checkpoint holds")
    if labelled and refs[0].ndim != 2:
        raise PsdeployError(f"{candidate.description}: its first output is not class scores; expected a classifier")


__all__ = ["Disagreement", "ImageAccuracy", "OutputAgreement", "TopK", "check_fits_images", "image_accuracy"]
