"""Where a user's images are and what class each one is: class folders (ImageFolder) or flat files with a label file.

Everything here reads only names (no image is decoded), so a folder laid out wrong is refused in
one line at once, before any model loads: an empty folder, a class folder with no images, a label
file naming missing files or classes the model lacks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError
from psdeploy.images.decode import EXTENSIONS, is_image_file

KINDS = ", ".join(e.lstrip(".") for e in EXTENSIONS)


@dataclass(frozen=True)
class ImageSet:
    """Image files, with a class index each where the layout gives one, and the group each is balanced in."""

    root: Path
    layout: str  # how the files were found, for the summary
    files: tuple[Path, ...]
    groups: tuple[int, ...]  # the class of each file (class folders, labels) or 0 (flat, unlabelled)
    labelled: bool
    classes: tuple[str, ...] = ()  # class index -> name, where known
    unlisted: int = 0  # images under root that a label file does not name (not measured)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.groups, dtype=np.int64)

    def name(self, index: int) -> str:
        """A file's path as the user would write it: relative to the root."""
        return str(self.files[index].relative_to(self.root))

    def class_name(self, label: int) -> str:
        return self.classes[label] if label < len(self.classes) else str(label)

    def describe(self) -> str:
        count = len(set(self.groups))
        classes = f" of {count} classes" if self.labelled else ""
        unlisted = f" ({self.unlisted} more images there are not in the label file, not measured)"
        return f"{len(self.files)} images{classes} in {self.root} ({self.layout}){unlisted if self.unlisted else ''}"

    def balanced(self, limit: int, seed: int = 0) -> ImageSet:
        """``limit`` files drawn evenly from every group (a seeded draw; a group with too few gives all it has),
        in their original order."""
        if limit >= len(self.files):
            return self
        rng = np.random.default_rng(seed)
        members: dict[int, list[int]] = {}
        for index, group in enumerate(self.groups):
            members.setdefault(group, []).append(index)
        queues = [list(rng.permutation(members[g])) for g in rng.permutation(sorted(members))]
        chosen: list[int] = []
        while len(chosen) < limit:
            for queue in queues:
                if queue and len(chosen) < limit:
                    chosen.append(int(queue.pop()))
        keep = sorted(chosen)
        return replace(self, files=tuple(self.files[i] for i in keep), groups=tuple(self.groups[i] for i in keep),
                       layout=f"{self.layout}; a class-balanced sample of {limit} of {len(self.files)}, seed {seed}")

    def split(self, first: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A balanced sample of ``first`` files and the rest, disjoint."""
        head = self.balanced(first, seed)
        taken = set(head.files)
        rest = [i for i, f in enumerate(self.files) if f not in taken]
        tail = replace(self, files=tuple(self.files[i] for i in rest), groups=tuple(self.groups[i] for i in rest))
        return head, tail


def find_images(folder: Path) -> list[Path]:
    """Every image file in ``folder`` and below, extensions compared case-insensitively, sorted."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())


def _names(path: Path, option: str) -> list[str]:
    """The non-blank, non-comment lines of a text file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PsdeployError(f"{option} {path}: cannot be read as text ({exc.__class__.__name__})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_classes(path: Path, num_classes: int | None) -> tuple[str, ...]:
    """``--classes FILE``: one class (folder) name a line, in the model's class-index order."""
    names = _names(path, "--classes")
    if not names:
        raise PsdeployError(f"--classes {path}: no class names; expected one folder name a line, in index order")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise PsdeployError(f"--classes {path}: {', '.join(duplicates[:3])} listed more than once")
    if num_classes is not None and len(names) != num_classes:
        raise PsdeployError(f"--classes {path}: {len(names)} names; the model has {num_classes} classes")
    return tuple(names)


def _class_folders(root: Path, classes: tuple[str, ...], num_classes: int | None, labelled: bool) -> ImageSet:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and is_image_file(p))
    if loose:
        raise PsdeployError(f"{root}: {len(loose)} image files ({', '.join(loose[:3])}) beside the class folders; "
                            f"expected images only inside class folders (or a flat folder with --labels)")
    names = classes or tuple(p.name for p in folders)
    index = {name: i for i, name in enumerate(names)}
    if classes:
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise PsdeployError(f"{root}: class folder '{unknown[0]}' is not in --classes ({len(unknown)} such); "
                                f"expected folder names from the classes file")
    elif labelled and num_classes is not None and len(folders) != num_classes:
        raise PsdeployError(f"{root}: {len(folders)} class folders; the model has {num_classes} classes (give "
                            f"--classes FILE naming the model's classes in index order)")
    files: list[Path] = []
    groups: list[int] = []
    for folder in folders:
        found = find_images(folder)
        if not found:
            raise PsdeployError(f"{folder}: a class folder with no images ({KINDS}) in it or below it")
        files += found
        groups += [index[folder.name]] * len(found)
    return ImageSet(root, "class folders", tuple(files), tuple(groups), labelled, names)


def _label_file(root: Path, labels: Path, classes: tuple[str, ...], num_classes: int | None) -> ImageSet:
    """``--labels FILE``: ``filename label`` lines (ImageNet-val's ground truth), label a class index or a name
    from ``--classes``."""
    lines = _names(labels, "--labels")
    if not lines:
        raise PsdeployError(f"--labels {labels}: no 'filename label' lines")
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    groups: list[int] = []
    seen: set[Path] = set()
    for number, line in enumerate(lines, 1):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise PsdeployError(f"--labels {labels} line {number}: {line!r}; expected 'filename label'")
        name, label = parts
        if label.lstrip("-").isdigit():
            value = int(label)
        elif label in index:
            value = index[label]
        else:
            raise PsdeployError(f"--labels {labels} line {number}: label {label!r} is neither a class index nor a "
                                f"name from --classes")
        if num_classes is not None and not 0 <= value < num_classes:
            raise PsdeployError(f"--labels {labels} line {number}: label {value} is outside the model's "
                                f"{num_classes} classes (0-{num_classes - 1})")
        path = root / name
        if not path.is_file():
            raise PsdeployError(f"--labels {labels} line {number}: {path} does not exist")
        if path in seen:
            raise PsdeployError(f"--labels {labels} line {number}: {name} is listed a second time")
        seen.add(path)
        files.append(path)
        groups.append(value)
    unlisted = len(set(find_images(root)) - set(files))
    return ImageSet(root, f"label file {labels}", tuple(files), tuple(groups), True, classes, unlisted)


def read_image_set(root: str | Path, *, labels: str | Path | None = None, classes: str | Path | None = None,
                   num_classes: int | None = None, labelled: bool = True, option: str = "--data") -> ImageSet:
    """The images under ``root``: class folders (class index = sorted folder names, or ``classes``' order), or
    flat/nested files with a ``labels`` file; with ``labelled=False`` (calibration, backbones) a plain folder
    of images too. ``num_classes``: the model's, which labels must fit."""
    root = Path(root)
    if not root.is_dir():
        raise PsdeployError(f"{option} {root}: no such folder; expected a folder of images ({KINDS})")
    names = read_classes(Path(classes), num_classes) if classes else ()
    if labels:
        return _label_file(root, Path(labels), names, num_classes)
    if not find_images(root):
        raise PsdeployError(f"{option} {root}: no image files ({KINDS}) in it or below it")
    if any(p.is_dir() for p in root.iterdir()):
        return _class_folders(root, names, num_classes, labelled)
    if labelled:
        raise PsdeployError(f"{option} {root}: images but no class folders; expected one folder per class, or "
                            f"--labels FILE with 'filename label' lines")
    files = tuple(find_images(root))
    return ImageSet(root, "flat folder", files, (0,) * len(files), False)


__all__ = ["ImageSet", "find_images", "read_classes", "read_image_set"]
