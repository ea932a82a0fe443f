"""Triage of a batch prediction table (``kpcore predict INPUT... --out TABLE``).

Reading the table, counting what it holds, filtering its faces, and, where
the photos carry labels (a 300-W ``.pts`` file beside the photo), how well the
per-face confidence ranks the real failures. Small pure functions of pandas
tables and numpy arrays; the dashboard's Triage page draws what they return.

The table has one row per face; an input with no face, or that could not be
read, has one row whose ``status`` says so (columns in docs/FORMATS.md).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from ..data.facts import W300_FACTS, DatasetFacts
from ..errors import AnnotationError
from .metrics import FAILURE_THRESHOLD, nme

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".jsonl", ".ndjson")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FACE_STATUSES = ("ok", "low_confidence")  # rows that hold a face (below the run's --min-confidence: the latter)
NO_FACE_STATUSES = ("no_face", "unreadable", "error")  # why an image has no face row
STATUSES = FACE_STATUSES + NO_FACE_STATUSES
REQUIRED_COLUMNS = ("source", "frame", "face", "status", "error")
FACE_COLUMNS = ("box_x", "box_y", "box_w", "box_h", "det_score", "confidence", "yaw", "pitch", "roll")
POSE_COLUMNS = ("yaw", "pitch", "roll")
METADATA_KEY = b"kpcore"
LOWEST_FRACTION = 0.1  # "the lowest 10% of confidence": the share of faces a person would look at first
LABEL_SUFFIX = ".pts"
# A detector box and the labelled points' bounding box of the same face overlap by 0.5-0.8 (IoU);
# below this the detector found some other face of the photo, not the labelled one.
MIN_MATCH_IOU = 0.3
SIDE = "side"  # added column: the face box's longer side in pixels (the face's size)
_POINT_COLUMN = re.compile(r"^x(\d+)$")


class TriageTableError(ValueError):
    """A file that is not a batch prediction table."""


# --------------------------------------------------------------------- reading
def read_table(source: str | Path | bytes | BinaryIO, name: str | None = None) -> pd.DataFrame:
    """Read a batch table from a path, bytes or a file object (``name`` gives the format of the last two).

    The format follows the extension: ``.parquet``, ``.csv`` or ``.jsonl``. The table's
    metadata (Parquet's ``kpcore`` key: model, version, number of points) lands in
    ``df.attrs["kpcore"]``; ``df[SIDE]`` is added (the face box's longer side).

    Raises:
        TriageTableError: unknown extension, unreadable file, or columns missing.
    """
    label = str(name if name is not None else source if isinstance(source, str | Path) else "the upload")
    suffix = Path(label).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TriageTableError(f"{label}: a batch table ends in {', '.join(TABLE_SUFFIXES)}; got {suffix or 'no extension'!r}. "
                               "Write one with `kpcore predict INPUT... --out table.parquet`.")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    meta: dict = {}
    try:
        if FORMATS[suffix] == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(source)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            meta = json.loads(raw) if raw else {}
            df = table.to_pandas()
        elif FORMATS[suffix] == "csv":
            df = pd.read_csv(source, dtype={"source": str, "status": str, "error": str})
        else:
            df = pd.read_json(source, lines=True, dtype={"source": str, "status": str, "error": str})
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise TriageTableError(f"{label}: cannot read it as a {suffix} table ({e}).") from None
    return _checked(df, label, meta)


def _checked(df: pd.DataFrame, label: str, meta: dict) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if "status" in df.columns and df["status"].isin(FACE_STATUSES).any():
        missing += [c for c in FACE_COLUMNS if c not in df.columns]
        if num_points(df) == 0:
            missing.append("x0..x{K-1}, y0..y{K-1}")
    if missing:
        raise TriageTableError(f"{label}: not a kpcore batch table; missing column(s) {', '.join(missing)}. "
                               "Its columns are listed in docs/FORMATS.md (`kpcore predict ... --out TABLE`).")
    unknown = sorted(set(df["status"].dropna().astype(str)) - set(STATUSES))
    if unknown:
        raise TriageTableError(f"{label}: unknown status value(s) {unknown}; expected one of {list(STATUSES)}.")
    df = df.reset_index(drop=True)
    if "box_w" in df.columns:  # one concat: inserting a column into a wide frame read from CSV fragments it
        side = np.fmax(df["box_w"].astype(float), df["box_h"].astype(float)).rename(SIDE)
        df = pd.concat([df.drop(columns=[SIDE], errors="ignore"), side], axis=1)
    df.attrs["kpcore"] = meta
    return df


def num_points(df: pd.DataFrame) -> int:
    """K, from the ``x0..x{K-1}`` and ``y0..y{K-1}`` columns (0 if there are none)."""
    ids = sorted(int(m.group(1)) for c in df.columns if (m := _POINT_COLUMN.match(str(c))))
    k = len(ids)
    if ids != list(range(k)) or any(f"y{j}" not in df.columns for j in range(k)):
        return 0
    return k


def points(df: pd.DataFrame) -> np.ndarray:
    """``(N, K, 2)`` points of the rows, in source pixels."""
    k = num_points(df)
    xs = df[[f"x{j}" for j in range(k)]].to_numpy(np.float64)
    ys = df[[f"y{j}" for j in range(k)]].to_numpy(np.float64)
    return np.stack([xs, ys], axis=-1)


def point_confidence(df: pd.DataFrame) -> np.ndarray | None:
    """``(N, K)`` per-point confidences, or None when the table has none."""
    cols = [f"pc{j}" for j in range(num_points(df))]
    return df[cols].to_numpy(np.float64) if cols and all(c in df.columns for c in cols) else None


# -------------------------------------------------------------------- counting
def image_keys(df: pd.DataFrame) -> pd.Series:
    """One key per photo or video frame: ``source`` or ``source#frame``."""
    frame = df["frame"]
    return df["source"].astype(str) + np.where(frame.isna(), "", "#" + frame.astype("Int64").astype(str))


def counts(df: pd.DataFrame) -> dict[str, int]:
    """``inputs`` (files), ``images`` (photos and frames), ``faces`` (of them ``low_confidence``: faces
    below the run's ``--min-confidence``), and the images per status without a face."""
    keys = image_keys(df)
    out = {"inputs": int(df["source"].nunique()), "images": int(keys.nunique()),
           "faces": int(df["status"].isin(FACE_STATUSES).sum()),
           "low_confidence": int((df["status"] == "low_confidence").sum())}
    for status in NO_FACE_STATUSES:
        out[status] = int(keys[df["status"] == status].nunique())
    return out


def reasons(df: pd.DataFrame) -> pd.DataFrame:
    """Rows without a face grouped by status and reason: ``status, reason, rows, example``.

    A message that names its file (``'/x/notes.jpg' is not an image ...``) has the name replaced
    by :data:`FILE_MARK`, so a thousand unreadable files make one reason, not a thousand.
    """
    rest = df.loc[~df["status"].isin(FACE_STATUSES), ["source", "status", "error"]]
    if rest.empty:
        return pd.DataFrame(columns=["status", "reason", "rows", "example"])
    rest = rest.assign(reason=[_without_file(str(e), str(s)) if isinstance(e, str) else ""
                               for e, s in zip(rest["error"], rest["source"], strict=True)])
    table = rest.groupby(["status", "reason"], sort=False).agg(rows=("source", "size"), example=("source", "first"))
    return table.reset_index().sort_values("rows", ascending=False, kind="stable").reset_index(drop=True)


FILE_MARK = "<file>"


def _without_file(error: str, source: str) -> str:
    return error.replace(source, FILE_MARK).replace(Path(source).name, FILE_MARK)


def faces_per_image(df: pd.DataFrame) -> pd.Series:
    """Number of faces of each readable photo or frame (0 for those with no face), by image key."""
    readable = df["status"].isin((*FACE_STATUSES, "no_face"))
    keys = image_keys(df)[readable]
    return df.loc[readable, "status"].isin(FACE_STATUSES).groupby(keys).sum().astype(int)


def faces(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that hold a face."""
    return df[df["status"].isin(FACE_STATUSES)]


# ------------------------------------------------------------------- filtering
Range = tuple[float, float] | None  # inclusive; None keeps every face, those without a value too


@dataclass(frozen=True)
class FaceFilter:
    """Which faces to keep; each field is an inclusive ``(low, high)`` range or None."""

    confidence: Range = None
    yaw: Range = None
    pitch: Range = None
    roll: Range = None
    side: Range = None  # the face box's longer side, in pixels

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """True for the rows (faces) inside every range."""
        keep = pd.Series(True, index=df.index)
        for column, rng in (("confidence", self.confidence), ("yaw", self.yaw), ("pitch", self.pitch),
                            ("roll", self.roll), (SIDE, self.side)):
            if rng is not None:
                keep &= df[column].astype(float).between(*rng)
        return keep


def lowest_confidence(df: pd.DataFrame, n: int, one_per_track: bool = False) -> pd.DataFrame:
    """The ``n`` faces of lowest confidence, lowest first (a face without one counts as lowest).

    ``one_per_track`` keeps only the least confident frame of each video face (``source`` and the
    tracker's ``face`` id), so one bad track does not fill the list with its frames.
    """
    order = df["confidence"].astype(float).fillna(-np.inf).sort_values(kind="stable").index
    if one_per_track:  # a photo's (source, face) pairs are unique already
        order = order[~df.loc[order, ["source", "face"]].duplicated().to_numpy()]
    return df.loc[order[:n]]  # sorting one column, not the wide table


# ---------------------------------------------------------------------- labels
@dataclass
class LabelMatch:
    """Faces of a table matched to labels found beside their photos.

    Attributes:
        nme: Per face (indexed like the table), NME of the prediction against its label;
            NaN for faces without a label.
        labelled: Photos with a readable label file.
        missed: Labelled photos where no detected face covers the labelled one (NME cannot rank
            these: the detector missed the face, or found only other faces).
        bad: One message per label file that could not be read.
    """

    nme: pd.Series
    labelled: int = 0
    missed: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return int(self.nme.notna().sum())


def label_path(source: str, suffix: str = LABEL_SUFFIX) -> Path:
    """Where a photo's label file would be: beside it, with ``suffix``."""
    return Path(source).with_suffix(suffix)


def box_iou(box: np.ndarray, other: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` boxes ``(left, top, width, height)`` with one box ``other``."""
    box = np.atleast_2d(np.asarray(box, np.float64))
    x0 = np.maximum(box[:, 0], other[0])
    y0 = np.maximum(box[:, 1], other[1])
    x1 = np.minimum(box[:, 0] + box[:, 2], other[0] + other[2])
    y1 = np.minimum(box[:, 1] + box[:, 3], other[1] + other[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[:, 2] * box[:, 3] + other[2] * other[3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def points_box(pts: np.ndarray) -> np.ndarray:
    """``(left, top, width, height)`` of a ``(K, 2)`` point set."""
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float64)


def match_labels(df: pd.DataFrame, reader: Callable[[Path], np.ndarray] | None = None,
                 facts: DatasetFacts = W300_FACTS, min_iou: float = MIN_MATCH_IOU,
                 suffix: str = LABEL_SUFFIX) -> LabelMatch:
    """NME of each face against the label beside its photo (photos only; videos have no label files).

    Each label file holds one face; it is matched to the detected face whose box overlaps the
    labelled points' box most (IoU >= ``min_iou``), so a photo's other faces stay unlabelled.
    NME is the mean point distance over ``facts``' normalising distance (300-W: outer eye
    corners 36 and 45), as :func:`kpcore.evaluation.metrics.nme`.
    """
    if reader is None:
        from ..data.formats import read_pts

        def reader(path: Path) -> np.ndarray:
            return read_pts(path, expected_points=facts.num_points)

    out = LabelMatch(nme=pd.Series(np.nan, index=df.index, dtype=np.float64))
    if num_points(df) not in (0, facts.num_points):
        return out
    photos = df[df["frame"].isna() & df["status"].isin((*FACE_STATUSES, "no_face"))]
    a, b = facts.norm_points
    for source, rows in photos.groupby("source", sort=False):
        path = label_path(str(source), suffix)
        if not path.is_file():
            continue
        try:
            true = np.asarray(reader(path), np.float64)
        except AnnotationError as e:
            out.bad.append(str(e))
            continue
        out.labelled += 1
        found = rows[rows["status"].isin(FACE_STATUSES)]
        iou = box_iou(found[["box_x", "box_y", "box_w", "box_h"]].to_numpy(np.float64), points_box(true)) \
            if len(found) else np.zeros(0)
        if len(iou) == 0 or iou.max() < min_iou:
            out.missed.append(str(source))
            continue
        best = found.index[int(np.argmax(iou))]
        norm = np.linalg.norm(true[a] - true[b])
        out.nme[best] = float(nme(points(found.loc[[best]]), true[None], np.array([norm]))[0])
    return out


# --------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class Ranking:
    """How many real failures the lowest-confidence faces hold.

    Attributes:
        faces: Labelled faces ranked.
        failures: Of them, those with NME above the threshold.
        inspected: Faces in the lowest ``fraction`` of confidence (rounded up).
        found: Failures among the inspected faces.
        share: ``found / failures``: the share of all failures found by inspecting ``fraction``.
        random: The same share expected from inspecting faces in random order (``inspected / faces``).
        best: The share if the inspected faces were the worst ones (``min(1, inspected / failures)``).
    """

    faces: int
    failures: int
    inspected: int
    found: int
    share: float
    random: float
    best: float


def _by_confidence(nmes: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs with both values, least confident first (stable, so ties keep table order)."""
    nmes, confidence = np.asarray(nmes, np.float64), np.asarray(confidence, np.float64)
    ok = np.isfinite(nmes) & np.isfinite(confidence)
    order = np.argsort(confidence[ok], kind="stable")
    return nmes[ok][order], confidence[ok][order]


def failures_in_lowest(nmes: np.ndarray, confidence: np.ndarray, fraction: float = LOWEST_FRACTION,
                       threshold: float = FAILURE_THRESHOLD) -> Ranking:
    """The share of failures (NME > ``threshold``) among the lowest ``fraction`` of confidence."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    ranked, _ = _by_confidence(nmes, confidence)
    n = len(ranked)
    fails = ranked > threshold
    total = int(fails.sum())
    k = min(n, math.ceil(fraction * n - 1e-9))
    found = int(fails[:k].sum())
    nan = float("nan")
    return Ranking(faces=n, failures=total, inspected=k, found=found,
                   share=found / total if total else nan, random=k / n if n else nan,
                   best=min(1.0, k / total) if total else nan)


def ranking_curve(nmes: np.ndarray, confidence: np.ndarray, threshold: float = FAILURE_THRESHOLD) -> pd.DataFrame:
    """Share of failures found against share of faces inspected, least confident first.

    Columns ``inspected`` (0 to 1), ``found`` (ranked by confidence), ``random`` (the diagonal)
    and ``best`` (the worst faces first); one row per face plus the origin.
    """
    ranked, _ = _by_confidence(nmes, confidence)
    n = len(ranked)
    fails = (ranked > threshold).astype(np.float64)
    total = fails.sum()
    inspected = np.arange(n + 1) / max(n, 1)
    if total == 0:
        found = best = np.full(n + 1, np.nan)
    else:
        found = np.concatenate([[0.0], np.cumsum(fails)]) / total
        best = np.minimum(np.arange(n + 1) / total, 1.0)
    return pd.DataFrame({"inspected": inspected, "found": found, "random": inspected, "best": best})
