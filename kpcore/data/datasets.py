"""The datasets and tasks: where the files are, how they split, what a sample is.

A *dataset* is a folder of images with labels (IMM, 300-W). A *task* is what a
model learns from one: which points, how the face is cropped, the default
input size. Facts about each live in :data:`DATASETS` and :data:`TASKS`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import AnnotationError, DatasetNotFoundError
from .facts import FACTS, IMM_FACTS, IMM_NOSE_TIP, MTFL_FACTS, W300_FACTS, DatasetFacts
from .formats import parse_300w_xml, parse_asf, parse_mtfl, read_pts
from .geometry import Box

DEFAULT_DATA_ROOT = "./data"
DATA_ENV = "KPCORE_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset lives under the data root and how to get it."""

    name: str
    folders: tuple[str, ...]  # accepted folder names under the data root, first = what `download` makes
    get: str  # the command that fetches it


DATASETS: dict[str, DatasetInfo] = {
    "imm": DatasetInfo("imm", ("imm_face_db",), "python -m kpcore download imm --root DATA_ROOT"),
    "ibug300w": DatasetInfo(
        "ibug300w",
        ("ibug_300W_large_face_landmark_dataset", "ibug_300W_subset"),
        "python -m kpcore download ibug300w --root DATA_ROOT",
    ),
    "mtfl": DatasetInfo("mtfl", ("mtfl", "MTFL"), "python -m kpcore download mtfl --root DATA_ROOT"),
}

IMM_TRAIN_PERSONS = range(1, 33)  # persons 01-32 train (192 images), 33-40 validation (48)
W300_VAL_FRACTION = 0.1  # share of 300-W training faces carved out for validation
W300_TRAIN_XML = "labels_ibug_300W_train.xml"
W300_TEST_XML = "labels_ibug_300W_test.xml"
MTFL_VAL_FRACTION = 0.1  # share of MTFL's training faces held out for validation, by image-name hash
MTFL_LABELS = "training.txt"
#: Face box of an MTFL face from its five points (MTFL has no boxes): a square of side
#: ``MTFL_BOX_SIDE * hypot(eye distance, eye-to-mouth distance)`` centred between the
#: eyes' and the mouth's midpoints, ``MTFL_BOX_DY`` of that side lower. Fitted as the
#: median relation on the 1,093 300-W training faces (their XML boxes against the five
#: points made from their 68); the side's spread there was 11%.
MTFL_BOX_SIDE = 1.664
MTFL_BOX_DY = -0.008


@dataclass(frozen=True)
class TaskInfo:
    """What a model learns: a dataset, a subset of its points, a crop and an input size."""

    name: str
    dataset: str
    layout: str  # key of kpcore.data.facts.FACTS
    point_ids: tuple[int, ...] | None  # subset of the dataset's points, None = all
    crop_mode: str  # "whole": resize the whole image; "box": crop the face box
    input_size: tuple[int, int]  # default (width, height)
    enlarge: float = 1.0  # default box enlargement for crop_mode "box"
    splits: tuple[str, ...] = ("train", "val")

    @property
    def facts(self) -> DatasetFacts:
        return FACTS[self.layout]


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("imm_nose", "imm", "imm_nose", (IMM_NOSE_TIP,), "whole", (80, 60)),
        TaskInfo("imm_face", "imm", "imm", None, "whole", (160, 120)),
        TaskInfo("ibug300w", "ibug300w", "ibug300w", None, "box", (128, 128), enlarge=1.3,
                 splits=("train", "val", "test")),
        TaskInfo("mtfl", "mtfl", "mtfl", None, "box", (128, 128), enlarge=1.3),
    )
}


def get_task(name: str) -> TaskInfo:
    """Look up a task by name; unknown names list the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


@dataclass(frozen=True)
class Sample:
    """One annotated face.

    Attributes:
        image_id: Stable id, the image path relative to the dataset folder
            (plus ``#n`` for the n-th face of an image with several).
        image_path: Absolute path of the image file.
        points: ``(K, 2)`` float32 points of the task, original-image pixels.
        box: Face box ``(left, top, width, height)``, or None (whole image).
        norm_distance: The layout's normalising distance in pixels (for NME).
        image_size: ``(width, height)`` of the image.
        attributes: Per-face labels besides the points, where the dataset has them
            (MTFL: ``gender``, ``smile``, ``glasses``, ``pose``), else None.
    """

    image_id: str
    image_path: Path
    points: np.ndarray
    box: Box | None
    norm_distance: float
    image_size: tuple[int, int]
    attributes: dict | None = None


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """``--data-root`` if given, else ``$KPCORE_DATA``, else ``./data``."""
    if data_root is None:
        data_root = os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT
    return Path(data_root).expanduser()


def dataset_dir(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name`` under the data root, or an error saying where we looked."""
    info = DATASETS[name]
    root = resolve_data_root(data_root)
    for folder in info.folders:
        if (root / folder).is_dir():
            return root / folder
    looked = ", ".join(str(root / f) for f in info.folders)
    raise DatasetNotFoundError(
        f"dataset {name!r} not found: looked for {looked}. Get it with "
        f"`{info.get.replace('DATA_ROOT', str(root))}`, or point --data-root / ${DATA_ENV} at the folder "
        f"that holds {info.folders[0]}/."
    )


# ------------------------------------------------------------------------- IMM
_IMM_NAME = re.compile(r"^(\d{2})-(\d)([mf])\.asf$")


@lru_cache(maxsize=8)
def _load_imm(folder: Path) -> tuple[tuple[str, Path, np.ndarray, tuple[int, int]], ...]:
    out = []
    for asf in sorted(folder.glob("*.asf")):
        if not _IMM_NAME.match(asf.name):
            continue
        image_path = asf.with_suffix(".jpg")
        if not image_path.exists():
            raise DatasetNotFoundError(f"{asf}: its image {image_path.name} is missing; re-extract the IMM archive")
        with Image.open(image_path) as im:
            size = im.size
        pts = parse_asf(asf, expected_points=IMM_FACTS.num_points).to_pixels(*size)
        out.append((asf.stem, image_path, pts, size))
    if not out:
        raise DatasetNotFoundError(f"{folder}: no IMM .asf files (PP-Vs.asf) found; re-download with "
                                   f"`python -m kpcore download imm`")
    return tuple(out)


def _imm_person(stem: str) -> int:
    return int(stem.split("-")[0])


def load_imm(split: str, data_root=None, point_ids: tuple[int, ...] | None = None) -> list[Sample]:
    """IMM samples of ``split`` (persons 01-32 train, 33-40 val), optionally a subset of points."""
    if split not in ("train", "val"):
        raise ValueError(f"IMM has splits 'train' and 'val' (persons 01-32 / 33-40); got {split!r}")
    folder = dataset_dir("imm", data_root)
    a, b = IMM_FACTS.norm_points
    samples = []
    for stem, path, pts, size in _load_imm(folder.resolve()):
        is_train = _imm_person(stem) in IMM_TRAIN_PERSONS
        if is_train != (split == "train"):
            continue
        norm = float(np.linalg.norm(pts[a] - pts[b]))
        task_pts = pts if point_ids is None else pts[list(point_ids)]
        samples.append(Sample(stem, path, task_pts.copy(), None, norm, size))
    return samples


# ----------------------------------------------------------------------- 300-W
def _is_val(image_rel: str, fraction: float = W300_VAL_FRACTION) -> bool:
    """Deterministic validation membership, by image name.

    Hash of the name with any ``_mirror`` suffix removed, so that an image and
    the mirrored copy of the official 300-W release always fall on the same side.
    """
    base = re.sub(r"_mirror(?=\.\w+$)", "", image_rel.replace("\\", "/"))
    h = int(hashlib.sha1(base.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


PTS_AGREEMENT_PX = 1.5  # a .pts beside the image replaces the XML points if they agree this well


def _precise_points(face) -> np.ndarray:
    """The XML's points, or the sub-pixel ``.pts`` beside the image when it is the same face.

    The official XML rounds the ``.pts`` coordinates to integers; where the
    ``.pts`` file exists (and is the face of this box: every point within
    :data:`PTS_AGREEMENT_PX`) its precision is kept.
    """
    pts_file = face.image.with_suffix(".pts")
    if not pts_file.exists():
        return face.points
    try:
        precise = read_pts(pts_file, expected_points=len(face.points))
    except AnnotationError:
        return face.points
    if np.abs(precise - face.points).max() <= PTS_AGREEMENT_PX:
        return precise
    return face.points


def load_300w_xml(xml: str | os.PathLike, prefer_pts: bool = True) -> list[Sample]:
    """All faces of an XML file in the 300-W form (images relative to the XML).

    With ``prefer_pts``, points come from the ``.pts`` file beside an image when
    it holds the same face (the XML rounds them to whole pixels).
    """
    xml = Path(xml)
    faces = parse_300w_xml(xml, expected_points=W300_FACTS.num_points)
    a, b = W300_FACTS.norm_points
    counts: dict[str, int] = {}
    samples = []
    for f in faces:
        n = counts.get(f.image_rel, 0)
        counts[f.image_rel] = n + 1
        image_id = f.image_rel if n == 0 else f"{f.image_rel}#{n}"
        if not f.image.exists():
            raise DatasetNotFoundError(f"{xml}: image {f.image_rel!r} not found at {f.image}")
        with Image.open(f.image) as im:
            size = im.size
        pts = _precise_points(f) if prefer_pts else f.points
        norm = float(np.linalg.norm(pts[a] - pts[b]))
        samples.append(Sample(image_id, f.image, pts, f.box, norm, size))
    return samples


def load_300w(split: str, data_root=None, labels: str | os.PathLike | None = None) -> list[Sample]:
    """300-W samples: ``train``/``val`` carved from the train XML, ``test`` from the test XML.

    ``labels`` overrides the XML file (any XML of the 300-W form, for evaluation).
    """
    if labels is not None:
        return load_300w_xml(labels)
    if split not in ("train", "val", "test"):
        raise ValueError(f"300-W has splits 'train', 'val' and 'test'; got {split!r}")
    folder = dataset_dir("ibug300w", data_root)
    xml = folder / (W300_TEST_XML if split == "test" else W300_TRAIN_XML)
    if not xml.exists():
        raise DatasetNotFoundError(f"{xml} is missing; re-download with `python -m kpcore download ibug300w`")
    samples = _cached_xml(xml.resolve())
    if split == "test":
        return list(samples)
    want_val = split == "val"
    return [s for s in samples if _is_val(s.image_id.split("#")[0]) == want_val]


@lru_cache(maxsize=8)
def _cached_xml(xml: Path) -> tuple[Sample, ...]:
    return tuple(load_300w_xml(xml))


# ------------------------------------------------------------------------ MTFL
def five_point_box(points: np.ndarray) -> Box:
    """A face box ``(left, top, width, height)`` from five points (see :data:`MTFL_BOX_SIDE`)."""
    p = np.asarray(points, dtype=np.float64)
    eyes, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    side = MTFL_BOX_SIDE * float(np.hypot(np.linalg.norm(p[0] - p[1]), np.linalg.norm(eyes - mouth)))
    cx, cy = (eyes + mouth) / 2
    cy += MTFL_BOX_DY * side
    return (float(cx - side / 2), float(cy - side / 2), side, side)


@lru_cache(maxsize=4)
def _load_mtfl(folder: Path) -> tuple[Sample, ...]:
    labels = folder / MTFL_LABELS
    if not labels.exists():
        raise DatasetNotFoundError(f"{labels} is missing; re-download with `python -m kpcore download mtfl`")
    a, b = MTFL_FACTS.norm_points
    samples = []
    for face in parse_mtfl(labels):
        path = folder / face.image_rel
        if not path.exists():
            raise DatasetNotFoundError(f"{labels}: image {face.image_rel!r} not found at {path}; "
                                       f"re-extract the MTFL archive")
        with Image.open(path) as im:
            size = im.size
        norm = float(np.linalg.norm(face.points[a] - face.points[b]))
        samples.append(Sample(face.image_rel, path, face.points, five_point_box(face.points), norm, size,
                              dict(face.attributes)))
    return tuple(samples)


def load_mtfl(split: str, data_root=None) -> list[Sample]:
    """MTFL's training faces, split by a hash of the image name (about 10% ``val``).

    Boxes are made from the five points (:func:`five_point_box`); each sample's
    ``attributes`` hold the head pose and the other labels.
    """
    if split not in ("train", "val"):
        raise ValueError(f"MTFL has splits 'train' and 'val' (about 10% by image-name hash); got {split!r}")
    samples = _load_mtfl(dataset_dir("mtfl", data_root).resolve())
    want_val = split == "val"
    return [s for s in samples if _is_val(s.image_id, MTFL_VAL_FRACTION) == want_val]


# ---------------------------------------------------------------- pseudo-labels
PSEUDO_COLUMNS = ("image_id", "weight", "points")  # what a pseudo-label file must hold


@dataclass(frozen=True)
class PseudoLabels:
    """Machine-made full labels for partly labelled faces (``scripts/pseudo_label_mtfl.py``).

    Attributes:
        points: ``(N, K, 2)`` points per sample, original-image pixels, aligned with the
            samples they were matched to; a face without a label holds its own points'
            centre (finite, in the face) and weight 0.
        weight: ``(N,)`` training weight per face, 0 where there is no usable label.
        path: The file they came from.
    """

    points: np.ndarray
    weight: np.ndarray
    path: Path

    @property
    def labelled(self) -> int:
        """How many of the samples have a label (weight > 0)."""
        return int((self.weight > 0).sum())


def load_pseudo_labels(path: str | os.PathLike, samples: list[Sample], num_points: int) -> PseudoLabels:
    """Read a Parquet file of pseudo-labels and match its rows to ``samples`` by ``image_id``.

    The file has a row per face: ``image_id``, ``weight`` (0 = unused) and ``points``
    (``2 * num_points`` floats x0, y0, x1, y1, ... in original-image pixels). Samples
    without a row get weight 0; rows for other faces (e.g. a validation split) are ignored.

    Raises:
        DatasetNotFoundError: the file does not exist.
        AnnotationError: a column is missing, the point count is not ``num_points``,
            a value is not finite, or no row matches any of the samples.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"pseudo-label file {path} does not exist; make it with "
                                   f"`python scripts/pseudo_label_mtfl.py --out FOLDER` and give FOLDER/labels.parquet")
    table = pq.read_table(path)
    missing = [c for c in PSEUDO_COLUMNS if c not in table.column_names]
    if missing:
        raise AnnotationError(f"{path}: columns {missing} are missing (has {table.column_names}); "
                              f"a pseudo-label file needs {list(PSEUDO_COLUMNS)}")
    rows = table.select(list(PSEUDO_COLUMNS)).to_pydict()
    index = {image_id: i for i, image_id in enumerate(rows["image_id"])}
    points = np.zeros((len(samples), num_points, 2), np.float32)
    weight = np.zeros(len(samples), np.float32)
    for n, s in enumerate(samples):
        i = index.get(s.image_id)
        if i is None or not rows["weight"][i]:
            points[n] = np.asarray(s.points, np.float32).mean(axis=0)
            continue
        flat = np.asarray(rows["points"][i], np.float32)
        if flat.size != 2 * num_points:
            raise AnnotationError(f"{path}: face {s.image_id!r} has {flat.size // 2} points; this task needs "
                                  f"{num_points} (x, y) pairs")
        if not (np.isfinite(flat).all() and np.isfinite(rows["weight"][i]) and rows["weight"][i] > 0):
            raise AnnotationError(f"{path}: face {s.image_id!r} has a non-finite point or a bad weight "
                                  f"{rows['weight'][i]!r}; weights are > 0, or 0 for an unused face")
        points[n] = flat.reshape(num_points, 2)
        weight[n] = rows["weight"][i]
    if not weight.any():
        raise AnnotationError(f"{path}: none of its {len(index)} rows names one of the {len(samples)} faces "
                              f"(by image_id), or all have weight 0; was it made for this dataset?")
    return PseudoLabels(points, weight, path)


def load_split(task: str, split: str, data_root=None, labels=None) -> list[Sample]:
    """The samples of ``task`` (see :data:`TASKS`) in ``split``.

    Raises:
        ValueError: ``split`` is not one of the task's splits (the message lists them).
    """
    info = get_task(task)
    if labels is None and split not in info.splits:
        raise ValueError(f"task {task!r} has splits {list(info.splits)}; got {split!r}")
    if info.dataset == "mtfl":
        if labels is not None:
            raise ValueError("--labels takes an XML of the 300-W form; MTFL reads its training.txt")
        return load_mtfl(split, data_root)
    if info.dataset == "imm":
        if labels is not None:
            raise ValueError("--labels takes an XML of the 300-W form; IMM tasks read the .asf files")
        return load_imm(split, data_root, info.point_ids)
    return load_300w(split, data_root, labels)


def dataset_summary(data_root=None) -> dict[str, dict]:
    """What is present under the data root: split sizes per dataset, or the error."""
    out: dict[str, dict] = {}
    for name, task in (("imm", "imm_face"), ("ibug300w", "ibug300w"), ("mtfl", "mtfl")):
        splits = get_task(task).splits
        try:
            out[name] = {s: len(load_split(task, s, data_root)) for s in splits}
            out[name]["path"] = str(dataset_dir(name, data_root))
        except DatasetNotFoundError as e:
            out[name] = {"error": str(e)}
    return out
