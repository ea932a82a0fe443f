"""Batch predictions: any mix of photos, folders, globs, lists and videos in, one table out.

    from kpcore.live.batch import run_batch
    summary = run_batch(["photos/", "more/*.jpg", "list.txt", "clip.mp4"], "faces.parquet", workers=2)

    python -m kpcore predict photos/ clip.mp4 --out faces.parquet --workers 2
    python -m kpcore predict photos/ --out faces.parquet --engine ray      # the same table, on Ray Data

One row per face; an input with no face, or one that cannot be read, gets a row
of its own with the reason (``status`` and ``error``), so nothing is dropped
without a word. The columns are documented in docs/FORMATS.md ("Batch
prediction table"); :func:`table_schema` builds them.

**One function, two engines.** :func:`predict_sources` turns a batch of inputs
into table rows. The local engine calls it on chunks of inputs, in this
process (``workers=1``) or in a pool of processes that each hold a
:class:`~kpcore.live.predict.Predictor` (``workers=N``, with the cores split
between them: onnxruntime's intra-op threads are ``cores // N``; by default one
process per core). The Ray
engine calls the same function from a callable class in ``map_batches``
(:class:`RayPredict`), so the two give the same table.

**Resumable.** Finished chunks are written as Parquet files into
``<out>.parts/`` (each written to a temporary name and renamed, so a file there
is always complete); the run then assembles ``<out>`` from them (also written
under a temporary name) and removes the folder. A run that is killed (Ctrl-C,
SIGKILL) loses at most the chunks in flight; re-run with the same arguments, it
skips every input already in a part and finishes the table. While it runs, or
after a kill, ``pandas.read_parquet("<out>.parts")`` reads the rows so far. A
re-run over an existing ``<out>`` keeps its rows and adds the inputs it lacks
(``overwrite=True`` starts afresh).

Inputs are expanded by :func:`expand_inputs`: a folder is searched
recursively for photos and videos (by extension), a pattern with ``*``, ``?``
or ``[`` is a glob (``**`` recursive), a ``.txt`` file lists one path per line
(relative paths are relative to the list's folder; blank lines and lines
starting with ``#`` are skipped), and any other path is taken as it is. Videos
(by extension) go frame by frame through :class:`~kpcore.live.track.Tracker`;
their rows carry the frame index, and ``face`` is the tracker's stable id.

Nothing here imports PyTorch.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadImageError, KpcoreError, NoFaceFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".avif", ".mpo"})
"""Files a folder or glob contributes as photos."""
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                              ".flv", ".y4m", ".ogv", ".3gp", ".ts"})
"""Files treated as videos (anywhere: argument, folder, glob or list)."""
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
"""An argument with one of these extensions is a list of paths, one per line."""
TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""Output formats by the extension of ``out``."""

STATUSES = ("ok", "low_confidence", "no_face", "unreadable", "error")
"""``status`` values: a face (``ok``; ``low_confidence`` when below ``min_confidence``), or why an
input (or a video frame) has none: ``no_face``, ``unreadable`` (not a photo or video that can be
decoded, or missing), ``error`` (anything else)."""

DEFAULT_CHUNK = 32
"""Inputs per chunk: the unit of work, of progress with several workers, and of loss on a kill."""
RAY_CHUNK = 64
"""The Ray engine's default chunk: Ray's cost per batch is higher (1,000 photos on 2 cores, three runs
each: 60-74 photos/s at 64 a batch, 57-62 at 32; the local engine 69-79 at 32)."""
KEEP_PARTS_BYTES = 256 * 2**20
"""A run keeps the tables of the parts it writes in memory up to this size, for assembling the
table without reading them back (32 parts of 220 columns took 0.4 s to read, in a 10 s run)."""
METADATA_KEY = b"kpcore"
"""Parquet schema-metadata key holding the run's JSON description (model, version, points)."""
PARTS_SUFFIX = ".parts"
RUN_FILE = "run.json"
PREVIOUS_PART = "part-previous.parquet"
_ROWS_COLUMN = "_source_rows"  # rows of the source in this output; the Ray driver checks completeness


class InputError(KpcoreError, ValueError):
    """A batch argument names nothing usable (a missing path, a glob that matches nothing, ...)."""


# ------------------------------------------------------------------ inputs
@dataclass
class Inputs:
    """What :func:`expand_inputs` found.

    Attributes:
        sources: Absolute POSIX paths, in the order given (folders and globs sorted), no repeats.
        skipped: Files in folders that are neither photos nor videos, counted by extension.
    """

    sources: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def describe_skipped(self) -> str:
        if not self.skipped:
            return ""
        kinds = ", ".join(f"{n} {ext or '(no extension)'}" for ext, n in sorted(self.skipped.items()))
        return f"skipped {sum(self.skipped.values())} file(s) in folders that are not photos or videos: {kinds}"


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_inputs(inputs: Iterable[str | os.PathLike], base: Path | None = None,
                  _in_list: bool = False) -> Inputs:
    """Photos, folders (recursive), globs, ``.txt`` lists and videos -> one list of files.

    Raises:
        InputError: An argument names no existing file or folder, a glob matches nothing,
            or a list is empty (the message names it).
    """
    out: dict[str, None] = {}
    skipped: dict[str, int] = {}

    def add(path: Path) -> None:
        out.setdefault(path.absolute().as_posix(), None)

    def walk(folder: Path) -> None:
        for p in sorted(folder.rglob("*")):
            if not p.is_file():
                continue
            ext = p.suffix.lower()
            if ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS:
                add(p)
            else:
                skipped[ext] = skipped.get(ext, 0) + 1

    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if _is_glob(text) and not path.exists():
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches and not _in_list:
                raise InputError(f"{text!r} matches no file; check the pattern (quote it so that kpcore, "
                                 f"not the shell, expands it; '**' searches folders recursively)")
            for m in matches:
                (walk if Path(m).is_dir() else add)(Path(m))
        elif path.is_dir():
            walk(path)
        elif path.suffix.lower() in LIST_EXTENSIONS and not _in_list:
            listed = _read_list(path)
            found = expand_inputs(listed, base=path.parent, _in_list=True)
            out.update(dict.fromkeys(found.sources))
            for ext, n in found.skipped.items():
                skipped[ext] = skipped.get(ext, 0) + n
        elif path.is_file() or _in_list:
            add(path)  # a missing file named in a list becomes an "unreadable" row
        else:
            raise InputError(f"{text!r} is not a file, folder or pattern that exists; give photos, videos, "
                             f"folders, globs (e.g. 'photos/**/*.jpg') or a .txt list of paths")
    return Inputs(list(out), skipped)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"list {path} does not exist; a .txt argument is a list of paths, one per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"list {path} is not UTF-8 text ({e}); write one path per line") from None
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not entries:
        raise InputError(f"list {path} names no path; write one photo, video or folder per line")
    return entries


# ------------------------------------------------------------------ the table
def table_schema(num_points: int, metadata: dict | None = None):
    """The batch table's columns (docs/FORMATS.md) for a model of ``num_points`` points."""
    import pyarrow as pa

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    fields = [("source", s), ("frame", i64), ("face", i64), ("status", s), ("error", s),
              ("image_width", i64), ("image_height", i64),
              ("box_x", f64), ("box_y", f64), ("box_w", f64), ("box_h", f64),
              ("det_score", f64), ("confidence", f64), ("yaw", f64), ("pitch", f64), ("roll", f64)]
    fields += [(f"x{k}", f64) for k in range(num_points)]
    fields += [(f"y{k}", f64) for k in range(num_points)]
    fields += [(f"pc{k}", f64) for k in range(num_points)]
    meta = {METADATA_KEY: json.dumps(metadata).encode()} if metadata else None
    return pa.schema(fields, metadata=meta)


def num_points_of(schema) -> int:
    """K of a batch table's schema (its ``x0..x{K-1}`` columns)."""
    return sum(1 for name in schema.names if name[:1] == "x" and name[1:].isdigit())


DETECTORS = ("cascade", "retinaface")
"""Face detectors a batch can use: BlazeFace with RetinaFace behind it (default), or RetinaFace alone
(finds bystanders beside a large face too: 1,132 faces instead of 1,065 on the bench's 1,000 photos)."""


@dataclass
class BatchOptions:
    """How inputs become rows (the same for every engine; part of what a resumed run must match).

    Attributes:
        min_score: Face detector score threshold (None: the detector's default).
        min_confidence: Faces below this keypoint confidence get ``status="low_confidence"``
            (their row is kept); None marks none.
        whole_image: A photo with no face gets points placed on the whole image
            (``det_score`` 0) instead of a ``no_face`` row.
        detect_every: Video frames between face-detector runs (:class:`~kpcore.live.track.Tracker`).
        smooth: Smooth video points over time (One Euro filters).
        detector: ``"cascade"`` (BlazeFace, RetinaFace where BlazeFace is unsure: fast, but a
            small bystander beside a large, sure face is not looked for) or ``"retinaface"``
            (every photo through RetinaFace: every face, slower). See :data:`DETECTORS`.
    """

    min_score: float | None = None
    min_confidence: float | None = None
    whole_image: bool = False
    detect_every: int = 30
    smooth: bool = True
    detector: str = "cascade"

    def validate(self) -> None:
        if self.detector not in DETECTORS:
            raise InputError(f"unknown detector {self.detector!r}; choose from {', '.join(DETECTORS)}")
        for name in ("min_score", "min_confidence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1]; got {value}")
        if self.detect_every < 0:
            raise InputError(f"detect_every must be >= 0 frames; got {self.detect_every}")


class _Rows:
    """A chunk's rows, filled one at a time, turned into a table at the end.

    The scalar columns are lists; a face's points and point confidences are kept as one
    array each and become the ``x*``, ``y*`` and ``pc*`` columns in :meth:`table`, a
    column at a time (a row that has none, a failure, gets nulls there).
    """

    _SCALARS = ("source", "frame", "face", "status", "error", "image_width", "image_height",
                "box_x", "box_y", "box_w", "box_h", "det_score", "confidence", "yaw", "pitch", "roll")

    def __init__(self, num_points: int) -> None:
        self.k = num_points
        self.cols: dict[str, list] = {name: [] for name in self._SCALARS}
        self.points: list[np.ndarray | None] = []  # (K, 2) float64 per row, None for a failure
        self.point_conf: list[np.ndarray | None] = []  # (K,) float64 per row, or None

    def __len__(self) -> int:
        return len(self.points)

    def truncate(self, n: int) -> None:
        """Forget the rows after the first ``n``."""
        for values in (*self.cols.values(), self.points, self.point_conf):
            del values[n:]

    def failure(self, source: str, status: str, error: str, frame: int | None = None,
                size: tuple[int, int] | None = None) -> None:
        row = dict.fromkeys(self.cols)
        row.update(source=source, frame=frame, status=status, error=error)
        if size is not None:
            row.update(image_width=int(size[0]), image_height=int(size[1]))
        for name, value in row.items():
            self.cols[name].append(value)
        self.points.append(None)
        self.point_conf.append(None)

    def face(self, source: str, frame: int | None, index: int, size: tuple[int, int], box: Sequence[float],
             det_score: float | None, confidence: float | None, pose: dict | None, points: np.ndarray,
             point_confidence: np.ndarray | None, min_confidence: float | None) -> None:
        low = min_confidence is not None and confidence is not None and confidence < min_confidence
        c = self.cols
        c["source"].append(source)
        c["frame"].append(frame)
        c["face"].append(index)
        c["status"].append("low_confidence" if low else "ok")
        c["error"].append(f"confidence {confidence:.3f} is below min_confidence {min_confidence}" if low else None)
        c["image_width"].append(int(size[0]))
        c["image_height"].append(int(size[1]))
        for name, v in zip(("box_x", "box_y", "box_w", "box_h"), box, strict=True):
            c[name].append(float(v))
        c["det_score"].append(None if det_score is None else float(det_score))
        c["confidence"].append(None if confidence is None else float(confidence))
        for name in ("yaw", "pitch", "roll"):
            c[name].append(None if pose is None else float(pose[name]))
        pts = np.asarray(points, np.float64)
        if pts.shape != (self.k, 2):
            raise ValueError(f"expected ({self.k}, 2) points, got {pts.shape}")
        self.points.append(pts)
        self.point_conf.append(None if point_confidence is None else np.asarray(point_confidence, np.float64))

    def table(self):
        import pyarrow as pa

        schema = table_schema(self.k)
        n, k = len(self.points), self.k
        pts = np.zeros((n, k, 2))
        pc = np.zeros((n, k))
        no_pts = np.ones(n, bool)
        no_pc = np.ones(n, bool)
        for i, (p, q) in enumerate(zip(self.points, self.point_conf, strict=True)):
            if p is not None:
                pts[i], no_pts[i] = p, False
            if q is not None:
                pc[i], no_pc[i] = q, False
        columns = [_arrow_column(self.cols[name], schema.field(name).type) for name in self._SCALARS]
        points_valid, pc_valid = _validity(~no_pts), _validity(~no_pc)
        columns += [_arrow_floats(pts[:, j, 0], points_valid) for j in range(k)]
        columns += [_arrow_floats(pts[:, j, 1], points_valid) for j in range(k)]
        columns += [_arrow_floats(pc[:, j], pc_valid) for j in range(k)]
        return pa.Table.from_arrays(columns, schema=schema)


# Columns are built from their buffers: pa.array() imports pandas on its first call (0.45 s of each
# batch worker's start, ~5% of a 1,000-photo run on 2 cores), and a worker needs nothing of pandas.
def _validity(valid: np.ndarray):
    """An Arrow validity bitmap for a boolean mask (None when every value is valid)."""
    import pyarrow as pa

    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _arrow_floats(values: np.ndarray, validity):
    import pyarrow as pa

    return pa.Array.from_buffers(pa.float64(), len(values),
                                 [validity, pa.py_buffer(np.ascontiguousarray(values, np.float64))])


def _arrow_column(values: list, type_):
    """A string, int64 or float64 Arrow array from Python values (None: null)."""
    import pyarrow as pa

    n = len(values)
    validity = _validity(np.fromiter((v is not None for v in values), bool, n))
    if pa.types.is_string(type_):
        data = [b"" if v is None else str(v).encode() for v in values]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.fromiter(map(len, data), np.int64, n), out=offsets[1:], dtype=np.int32)
        return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])
    if pa.types.is_int64(type_):
        array = np.fromiter((0 if v is None else v for v in values), np.int64, n)
    elif pa.types.is_float64(type_):
        array = np.fromiter((0.0 if v is None else v for v in values), np.float64, n)
    else:
        raise TypeError(f"no column builder for {type_}")
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(array)])


def _reason(e: BaseException) -> str:
    """kpcore's message on one line; other exceptions also name their type."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, KpcoreError) else f"{type(e).__name__}: {text}"


def predict_sources(predictor, sources: Sequence[str], options: BatchOptions | None = None,
                    on_source: Callable[[str, int], None] | None = None):
    """THE per-batch function: rows for a batch of input files (a pyarrow Table, :func:`table_schema`).

    Every engine calls this. Photos are read with EXIF orientation and checked
    (:func:`kpcore.data.imageio.load_image_with_info`); their faces come largest
    first, in the photo's own pixels. Videos go through a
    :class:`~kpcore.live.track.Tracker`. A source that fails gets a row with the reason.

    Args:
        predictor: A :class:`~kpcore.live.predict.Predictor`.
        sources: Absolute file paths (:func:`expand_inputs`).
        options: :class:`BatchOptions`.
        on_source: Called as ``on_source(source, faces)`` after each source (progress).
    """
    options = options or BatchOptions()
    rows = _Rows(predictor.facts.num_points)
    for source in sources:
        before = len(rows)
        try:
            if is_video(source):
                _video_rows(predictor, source, options, rows)
            else:
                _photo_rows(predictor, source, options, rows)
        except (BadImageError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            _drop_rows_after(rows, before)
            rows.failure(source, "unreadable", _reason(e))
        except Exception as e:  # one bad input must not end the run: it gets a row with the reason
            _drop_rows_after(rows, before)
            rows.failure(source, "error", _reason(e))
        if on_source is not None:
            added = rows.cols["status"][before:]
            on_source(source, sum(s in ("ok", "low_confidence") for s in added))
    return rows.table()


def _drop_rows_after(rows: _Rows, n: int) -> None:
    """Forget a source's partial rows (a video that failed midway gets one failure row)."""
    rows.truncate(n)


def _photo_rows(predictor, source: str, options: BatchOptions, rows: _Rows) -> None:
    from ..data.imageio import load_image_with_info
    from .predict import _to_source_pixels

    arr, info = load_image_with_info(source)
    try:
        faces = predictor.predict(arr, min_score=options.min_score, whole_image_if_no_face=options.whole_image)
    except NoFaceFoundError as e:
        rows.failure(source, "no_face", _reason(e).replace(f"the {arr.shape[1]}x{arr.shape[0]} image",
                                                          "this image"), size=info.size)
        return
    faces = [_to_source_pixels(f, info.out_size, info.size) for f in faces]
    faces.sort(key=lambda f: -f.box[2] * f.box[3])  # largest first: face 0 is the main face
    for i, f in enumerate(faces):
        rows.face(source, None, i, info.size, f.box, f.score, f.confidence, f.pose, f.points,
                  f.point_confidence, options.min_confidence)


class _ConfidenceOnTrack:
    """A Predictor seen by the Tracker: its ``predict_regions`` also computes the confidences
    (one mirrored pass, as for photos) and keeps them by region for the rows."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self.last: dict[tuple[float, ...], tuple[float, np.ndarray]] = {}

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def predict_regions(self, images, regions, batch_size: int | None = None, with_confidence: bool = False):
        pts, conf, point_conf = self._predictor.predict_regions(images, regions, with_confidence=True)
        self.last = {tuple(float(v) for v in r): (float(c), pc)
                     for r, c, pc in zip(regions, conf, point_conf, strict=True)}
        return (pts, conf, point_conf) if with_confidence else pts


def _video_rows(predictor, source: str, options: BatchOptions, rows: _Rows) -> None:
    from ..data import geometry as geo
    from .track import Tracker, read_frames

    try:
        frames, fps, _, _ = read_frames(source)
    except ValueError as e:  # OpenCV cannot open it
        raise BadImageError(str(e)) from None
    seen = _ConfidenceOnTrack(predictor)
    tracker = Tracker(seen, smooth=options.smooth, detect_every=options.detect_every,
                      min_score=options.min_score)
    with_pose = predictor.facts.num_points == 68
    n = -1
    for n, frame in enumerate(frames):
        faces, _ = tracker.update(frame, n / fps)
        size = (frame.shape[1], frame.shape[0])
        if not faces:
            rows.failure(source, "no_face", "no face found or tracked on this frame", frame=n, size=size)
            continue
        for f in faces:
            conf, pc = seen.last.get(tuple(float(v) for v in f.region), (None, None))
            pose = None
            if with_pose:
                from .pose import estimate_pose

                pose = estimate_pose(f.points, size)
            rows.face(source, n, f.id, size, geo.points_box(f.points), None, conf, pose, f.points, pc,
                      options.min_confidence)
    if n < 0:
        raise BadImageError(f"{Path(source).name}: OpenCV opened the video but decoded no frame; convert it, "
                            f"e.g. `ffmpeg -i {Path(source).name} -c:v libx264 out.mp4`")


# ------------------------------------------------------------------ reading and writing tables
def table_format(path: str | os.PathLike) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the extension (an error names the choices)."""
    ext = Path(path).suffix.lower()
    if ext not in TABLE_FORMATS:
        raise InputError(f"--out {os.fspath(path)!r}: the table's format comes from its extension; use one of "
                         f"{', '.join(sorted(TABLE_FORMATS))} (e.g. faces.parquet)")
    return TABLE_FORMATS[ext]


def write_table(table, path: str | os.PathLike) -> Path:
    """Write ``table`` as Parquet, CSV or JSON lines (by extension), atomically (a temporary
    file renamed into place, so ``path`` is never half written)."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, use_dictionary=_dictionary_columns(table))
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for batch in table.to_batches(max_chunksize=4096):
                    for row in batch.to_pylist():
                        f.write(json.dumps(row, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_table(path: str | os.PathLike):
    """A batch table written in any of the formats (or a ``.parts`` folder), with its column types.

    Raises:
        InputError: The file is missing, or is not a batch table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise InputError(f"batch table {path} does not exist; write one with "
                         f"`python -m kpcore predict INPUT... --out {path.name}`")
    if path.is_dir():
        parts = sorted(path.glob("*.parquet"))
        tables = [pq.read_table(p) for p in parts]
        return pa.concat_tables(tables) if tables else None
    fmt = table_format(path)
    if fmt == "parquet":
        table = pq.read_table(path)
    else:
        header = _csv_header(path) if fmt == "csv" else _jsonl_keys(path)
        if "source" not in header:
            raise InputError(f"{path} is not a kpcore batch table (no 'source' column)")
        schema = table_schema(num_points_of(pa.schema([(n, pa.null()) for n in header])))
        if fmt == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=schema, strings_can_be_null=True))
        else:
            import pyarrow.json as pajson

            table = pajson.read_json(path, parse_options=pajson.ParseOptions(explicit_schema=schema))
        table = table.select(schema.names).cast(schema)
    if "source" not in table.column_names:
        raise InputError(f"{path} is not a kpcore batch table (no 'source' column)")
    return table


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [h.strip('"') for h in f.readline().rstrip("\n").split(",")]


def _jsonl_keys(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        line = f.readline()
    return list(json.loads(line)) if line.strip() else []


# ------------------------------------------------------------------ resumable parts
class PartStore:
    """``<out>.parts/``: one Parquet file per finished chunk, plus ``run.json`` (what made them).

    A part is written to a temporary name and renamed, so every ``part-*.parquet``
    is complete; leftovers of a killed write are removed when the store opens.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out.with_name(out.name + PARTS_SUFFIX)
        self._next: int | None = None  # the next part's number
        self._written: dict[str, object] = {}  # parts written by this run, by file name: their tables
        self._kept_bytes = 0

    def open(self, run: dict, overwrite: bool) -> set[str]:
        """Prepare the folder for ``run`` and return the sources already done."""
        import pyarrow.parquet as pq

        if overwrite:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
        run_file = self.folder / RUN_FILE
        if run_file.is_file():
            old = json.loads(run_file.read_text())
            if old != run:
                changed = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
                raise InputError(
                    f"{self.folder} holds an unfinished run made with other settings ({', '.join(changed)}: "
                    f"{', '.join(f'{old.get(k)!r} -> {run.get(k)!r}' for k in changed)}); re-run with the "
                    f"same arguments to finish it, or pass --overwrite to start again")
        else:
            run_file.write_text(json.dumps(run, indent=1))
        previous = self.folder / PREVIOUS_PART
        if self.out.exists() and not overwrite and not previous.exists():
            table = read_table(self.out)
            made_by = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}")).get("model")
            if made_by not in (None, run["model"]):
                raise InputError(f"{self.out} was made with model {made_by!r}, this run uses {run['model']!r}; "
                                 f"pass --overwrite to replace it, or another --out")
            if num_points_of(table.schema) != run["num_points"]:
                raise InputError(f"{self.out} has {num_points_of(table.schema)} points per face, this model "
                                 f"{run['num_points']}; pass --overwrite to replace it, or another --out")
            write_part(table.replace_schema_metadata(None).cast(table_schema(run["num_points"])), previous)
        done: set[str] = set()
        for part in self.parts():
            done.update(pq.read_table(part, columns=["source"]).column("source").to_pylist())
        return done

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def write(self, table) -> None:
        if self._next is None:
            numbers = [int(p.stem.split("-")[1]) for p in self.parts() if p.stem.split("-")[1].isdigit()]
            self._next = max(numbers, default=-1) + 1
        path = self.folder / f"part-{self._next:06d}.parquet"
        write_part(table, path)
        self._next += 1
        size = table.nbytes
        if self._kept_bytes + size <= KEEP_PARTS_BYTES:  # assemble() takes it from memory
            self._written[path.name] = table
            self._kept_bytes += size

    def assemble(self, metadata: dict, num_points: int):
        """All parts as one table (each source once, sorted by source, frame, face), written to ``out``;
        the folder is removed afterwards."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        schema = table_schema(num_points)
        tables, seen = [], set()
        for part in self.parts():
            t = self._written.get(part.name)  # this run's parts, up to KEEP_PARTS_BYTES, are in memory
            t = (pq.read_table(part) if t is None else t).cast(schema)
            sources = set(t.column("source").to_pylist())
            if sources & seen:  # never expected (done sources are skipped); keep the first rows of each
                t = t.filter(pc.invert(pc.is_in(t.column("source"), pa.array(sorted(seen)))))
            seen |= sources
            tables.append(t)
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        table = table.sort_by([("source", "ascending"), ("frame", "ascending"), ("face", "ascending")])
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
        write_table(table, self.out)
        shutil.rmtree(self.folder, ignore_errors=True)
        return table


def write_part(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, use_dictionary=_dictionary_columns(table))
    os.replace(tmp, path)


def _dictionary_columns(table) -> list[str]:
    """The string columns: the only ones Parquet's dictionary encoding helps (for the float columns
    it made the file larger and its writing slower: 8.2 ms a part of 34 faces, 6.0 ms without)."""
    import pyarrow as pa

    return [f.name for f in table.schema if pa.types.is_string(f.type)]


# ------------------------------------------------------------------ engines
def available_cores() -> int:
    """Cores this process may use (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """onnxruntime intra-op threads for each of ``workers`` processes: the cores split evenly."""
    return max(1, (cores or available_cores()) // workers)


def load_predictor(model: str, threads: int | None, detector: str = "cascade"):
    """A Predictor whose network and face detector each use ``threads`` intra-op threads.

    ``model``: a checkpoint folder (what :func:`run_batch` hands its engines; loaded without the
    Hub client), or any name :meth:`~kpcore.live.predict.Predictor.from_pretrained` takes.
    ``detector``: one of :data:`DETECTORS` (the cascade, or its RetinaFace alone)."""
    import cv2

    from .detect import get_detector
    from .predict import Predictor

    if Path(model).is_dir():
        predictor = Predictor.from_folder(model, threads=threads)
    else:
        predictor = Predictor.from_pretrained(model, threads=threads)
    cascade = get_detector(threads=threads)  # the detector's pool is the other half of the work
    predictor._detector = cascade if detector == "cascade" else cascade.slow
    if threads is not None:
        cv2.setNumThreads(threads)
    return predictor


_WORKER: dict = {}


def _worker_init(model: str, threads: int, options: dict) -> None:
    _WORKER["predictor"] = load_predictor(model, threads, options["detector"])
    _WORKER["options"] = BatchOptions(**options)


def _worker_run(sources: list[str]):
    return predict_sources(_WORKER["predictor"], sources, _WORKER["options"])


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """Consecutive chunks of ``size`` inputs; each video is a chunk of its own (it can be long)."""
    chunk: list[str] = []
    for s in items:
        if is_video(s):
            yield [s]
            continue
        chunk.append(s)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def local_engine(model: str, todo: Sequence[str], options: BatchOptions, workers: int, chunk_size: int,
                 on_source: Callable[[str, int], None]) -> Iterator:
    """Tables of finished chunks: in this process (``workers=1``) or a pool of ``workers`` processes."""
    threads = threads_per_worker(workers)
    if workers == 1:
        predictor = load_predictor(model, threads, options.detector)
        for chunk in _chunks(todo, chunk_size):
            yield predict_sources(predictor, chunk, options, on_source)
        return
    import multiprocessing

    # spawn: each worker starts clean (no copy of this process's threads or onnxruntime state)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(model, threads, asdict(options))) as pool:
        chunks = _chunks(todo, chunk_size)
        running: set = set()
        try:
            while True:
                while len(running) < 2 * workers:  # a bounded queue: results come back as they finish
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    running.add(pool.submit(_worker_run, chunk))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    table = fut.result()
                    _report_table(table, on_source)
                    yield table
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


def _report_table(table, on_source: Callable[[str, int], None]) -> None:
    import pyarrow.compute as pc

    faces = pc.is_in(table.column("status"), value_set=_face_statuses())
    counts: dict[str, int] = {}
    for source, is_face in zip(table.column("source").to_pylist(), faces.to_pylist(), strict=True):
        counts[source] = counts.get(source, 0) + int(is_face)
    for source, n in counts.items():
        on_source(source, n)


def _face_statuses():
    import pyarrow as pa

    return pa.array(["ok", "low_confidence"])


class RayPredict:
    """The callable class Ray Data's ``map_batches`` runs: one Predictor per actor, loaded once,
    calling :func:`predict_sources` on each batch of ``{"source": ...}`` rows."""

    def __init__(self, model: str, threads: int, options: dict) -> None:
        self.predictor = load_predictor(model, threads, options["detector"])
        self.options = BatchOptions(**options)

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        table = predict_sources(self.predictor, batch.column("source").to_pylist(), self.options)
        sources = table.column("source")
        counts = pc.value_counts(sources)
        per_source = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
        return table.append_column(_ROWS_COLUMN, pa.array([per_source[s] for s in sources.to_pylist()], pa.int64()))


def ray_engine(model: str, todo: Sequence[str], options: BatchOptions, workers: int, chunk_size: int,
               on_source: Callable[[str, int], None]) -> Iterator:
    """Tables of finished sources from Ray Data: ``from_items`` -> ``map_batches(RayPredict)``, streamed back.

    Connects to the cluster in ``$RAY_ADDRESS`` or starts a local Ray, unless
    ``ray.init`` was already called. Each of ``workers`` actors gets an equal
    share of the local cores (on a cluster: of the CPUs Ray reports).
    """
    ray = _ray()
    threads = threads_per_worker(workers, _ray_cpus())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.memory_usage_poll_interval_s = None  # no per-actor memory polling thread: the table is all we read
    ds = ray.data.from_items([{"source": s} for s in todo], override_num_blocks=max(1, -(-len(todo) // chunk_size)))
    ds = ds.map_batches(RayPredict, fn_constructor_args=(model, threads, asdict(options)), batch_size=chunk_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
    whole = WholeSources()
    with _quiet_ray_data():
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            table = whole.add(block)
            if table is not None:
                _report_table(table, on_source)
                yield table


@contextlib.contextmanager
def _quiet_ray_data():
    """Ray Data's own progress notices off while it runs: our bar and summary say the same (its
    "progress bars disabled" warning and "execution finished in" line); its warnings and errors stay."""
    import logging

    quiet = {"ray.data._internal.progress": logging.ERROR, "ray.data._internal.execution.streaming_executor":
             logging.WARNING}
    loggers = {name: logging.getLogger(name) for name in quiet}
    before = {name: lg.level for name, lg in loggers.items()}
    for name, lg in loggers.items():
        lg.setLevel(quiet[name])
    try:
        yield
    finally:
        for name, lg in loggers.items():
            lg.setLevel(before[name])


class WholeSources:
    """Rebuilds whole sources from the Ray engine's blocks.

    Ray may cut a block between any two rows (a long video's rows can span
    blocks); each row carries its source's row count (``_source_rows``), and a
    source's rows are consecutive (one :func:`predict_sources` call wrote them).
    :meth:`add` returns the sources a block completes, as one table with one
    chunk per column (a table of many slices is slow to measure, write and sort:
    ``nbytes`` took ~30 ms for 64 slices of ~220 columns), or None.
    """

    def __init__(self) -> None:
        self.pending: dict[str, list] = {}  # source -> its rows so far (slices of earlier blocks)

    def add(self, block):
        import pyarrow as pa

        if block.num_rows == 0:
            return None
        sources = block.column("source").to_pylist()
        expected = block.column(_ROWS_COLUMN).to_pylist()
        starts = [i for i in range(len(sources)) if i == 0 or sources[i] != sources[i - 1]]
        ends = starts[1:] + [len(sources)]
        if not self.pending and all(e - s == expected[s] for s, e in zip(starts, ends, strict=True)):
            complete = [block]  # the usual case: one actor call's output, every source whole
        else:
            complete = []
            for start, end in zip(starts, ends, strict=True):
                rows = self.pending.setdefault(sources[start], [])
                rows.append(block.slice(start, end - start))  # zero-copy, not a filter per source
                if sum(len(t) for t in rows) == expected[start]:
                    complete += self.pending.pop(sources[start])
        if not complete:
            return None
        return pa.concat_tables(complete).drop_columns([_ROWS_COLUMN]).combine_chunks()


def _ray():
    """Ray, started locally (or joined to ``$RAY_ADDRESS``) unless ``ray.init`` was already called."""
    try:
        import ray
    except ImportError as e:
        raise InputError("--engine ray needs Ray Data: pip install 'kpcore[ray]' (or 'ray[data]')") from e
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def _ray_cpus() -> int:
    return max(1, int(_ray().cluster_resources().get("CPU", available_cores())))


def default_workers(engine: str, chunks: int) -> int:
    """One worker per core (local) or per CPU Ray reports, one thread each: on a small model,
    processes scale better than onnxruntime's threads (measured on 2 cores: 2 processes x 1 thread
    gave 76 photos/s, 1 process x 2 threads 29); never more than there are chunks."""
    cores = _ray_cpus() if engine == "ray" else available_cores()
    return max(1, min(cores, chunks))


ENGINES = {"local": local_engine, "ray": ray_engine}


# ------------------------------------------------------------------ the run
def run_batch(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, model: str = "face68-300w",
              workers: int | None = None, engine: str = "local", options: BatchOptions | None = None,
              chunk_size: int | None = None, progress: bool = False, overwrite: bool = False) -> dict:
    """Predict on every input and write one table to ``out`` (resumable; see the module docstring).

    ``workers``: processes (local) or actors (ray), the cores split between them;
    None: :func:`default_workers` (one per core). ``chunk_size``: inputs per chunk
    (None: :data:`DEFAULT_CHUNK`, :data:`RAY_CHUNK` on Ray).

    Returns:
        A summary: ``inputs``, ``skipped_inputs`` (done in an earlier run), ``rows``, ``faces``,
        counts per status (of inputs, or frames for videos), ``seconds``, ``images_per_s``
        (inputs processed by this run per second), ``out``.
    """
    from tqdm import tqdm

    from .. import __version__
    from ..models.checkpoint import read_config
    from ..models.hub import resolve_model_dir

    options = options or BatchOptions()
    options.validate()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be >= 1; got {workers}")
    if chunk_size is None:
        chunk_size = RAY_CHUNK if engine == "ray" else DEFAULT_CHUNK
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1; got {chunk_size}")
    out = Path(out)
    table_format(out)
    found = expand_inputs(inputs)
    folder = resolve_model_dir(model)
    config = read_config(folder)
    k = int(config["num_keypoints"])
    run = {"model": folder.name, "num_points": k, "options": asdict(options)}
    store = PartStore(out)
    done = store.open(run, overwrite)
    todo = [s for s in found.sources if s not in done]
    workers = workers or default_workers(engine, sum(1 for _ in _chunks(todo, chunk_size)))
    faces = 0
    bar = tqdm(total=len(found.sources), initial=len(found.sources) - len(todo), unit="img", desc="predict",
               disable=not progress, dynamic_ncols=True)

    starting = engine == "ray" and bool(todo)
    if starting:
        bar.set_description_str("predict (starting Ray)")  # its actors take seconds to start

    def on_source(source: str, n: int) -> None:
        nonlocal faces, starting
        if starting:
            bar.set_description_str("predict", refresh=False)
            starting = False
        faces += n
        bar.update(1)
        bar.set_postfix(faces=faces, refresh=False)

    t0 = time.perf_counter()
    try:
        if todo:
            for table in ENGINES[engine](str(folder), todo, options, workers, chunk_size, on_source):
                store.write(table)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    metadata = {"model": folder.name, "layout": config.get("layout"), "num_points": k,
                "kpcore_version": __version__, "convention": "(x, y) pixels of the source, 0-based, pixel centres"}
    table = store.assemble(metadata, k)
    status = table.column("status").to_pylist()
    summary = {"inputs": len(found.sources), "skipped_inputs": len(done & set(found.sources)),
               "rows": len(status), "faces": sum(s in ("ok", "low_confidence") for s in status),
               **{s: status.count(s) for s in STATUSES}, "seconds": round(seconds, 2),
               "images_per_s": round(len(todo) / seconds, 2) if todo and seconds > 0 else None,
               "engine": engine, "workers": workers, "out": str(out), "not_inputs": found.describe_skipped()}
    return summary
