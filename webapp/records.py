"""Read what training, evaluation and benchmarking wrote (``docs/FORMATS.md``).

Plain functions over files, no Streamlit: the dashboard pages call these and
only draw. Where things are looked for:

* run folders: ``<repo>/runs/*/`` plus every folder in ``$KPCORE_RUNS``
  (``os.pathsep``-separated);
* checkpoint folders: ``<repo>/checkpoints/*/`` plus ``$KPCORE_CHECKPOINTS``,
  and the ``best/`` folder of each run;
* benchmarks: ``$KPCORE_BENCH`` or ``<repo>/benchmarks/bench.json``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kpcore.evaluation import metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV = "KPCORE_RUNS"
CHECKPOINTS_ENV = "KPCORE_CHECKPOINTS"
BENCH_ENV = "KPCORE_BENCH"
KEYPOINT_FORMAT = "kpcore-checkpoint"  # config.json "format" of a keypoint checkpoint

# Cumulative error curves run from NME 0 to this; above it an image is a failure.
FAILURE_NME = metrics.FAILURE_THRESHOLD

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".bmp")
FLAGSHIP = "face68-300w"  # the shipped model every page opens with
DETECTOR_SUFFIX = "-detector"  # eval folder of a run with detector boxes, e.g. test-detector
# Point layouts by number of points, for saved results that do not name theirs (e.g. dlib's).
LAYOUT_BY_POINTS = {68: "ibug300w", 58: "imm", 5: "mtfl", 1: "imm_nose"}
TASK_BY_LAYOUT = {"ibug300w": "ibug300w", "imm": "imm_face", "imm_nose": "imm_nose", "mtfl": "mtfl"}
_THUMB_NAME = re.compile(r"^(worst|best)_(\d+)_(.*)$")


# ----------------------------------------------------------------- locations
def _env_dirs(var: str) -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(var, "").split(os.pathsep) if p.strip()]


def runs_roots() -> list[Path]:
    """Folders that hold run folders: ``<repo>/runs``, the shipped ``<repo>/records``, then ``$KPCORE_RUNS``."""
    return _unique([REPO_ROOT / "runs", REPO_ROOT / "records", *_env_dirs(RUNS_ENV)])


def checkpoint_roots() -> list[Path]:
    """Folders that hold checkpoint folders: ``<repo>/checkpoints`` then ``$KPCORE_CHECKPOINTS``."""
    return _unique([REPO_ROOT / "checkpoints", *_env_dirs(CHECKPOINTS_ENV)])


def bench_path() -> Path:
    """Where the benchmark table is read from."""
    env = os.environ.get(BENCH_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "benchmarks" / "bench.json"


def _unique(paths: list[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# ------------------------------------------------------------------- configs
def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml(path: Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return data if isinstance(data, dict) else {"value": data}


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict to ``{"a.b.c": value}``; lists are kept as short strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v) if len(v) <= 16 else f"[{len(v)} items]"
        else:
            out[key] = v
    return out


def find_value(config: dict, name: str) -> Any:
    """The value of the first key named ``name`` at any depth (e.g. ``task``), else None."""
    for key, value in flatten(config).items():
        if key == name or key.endswith("." + name):
            return value
    return None


def layout_for(config: dict) -> str | None:
    """Keypoint layout name of a checkpoint / run config: ``layout``, else the task's layout."""
    layout = config.get("layout") or find_value(config, "layout")
    if layout:
        return str(layout)
    task = config.get("task") or find_value(config, "task")
    if task:
        try:
            from kpcore.data import TASKS
        except ImportError:
            return None
        info = TASKS.get(str(task))
        return info.layout if info else None
    return None


# ---------------------------------------------------------------------- runs
@dataclass
class Run:
    """One training run folder."""

    name: str
    path: Path
    config: dict
    metrics: pd.DataFrame | None
    best_config: dict | None = None

    @property
    def task(self) -> str | None:
        for cfg in (self.config, self.best_config or {}):
            t = cfg.get("task") or find_value(cfg, "task")
            if t:
                return str(t)
        return None

    def final_metrics(self) -> dict[str, Any]:
        """One row for the comparison table: best and last epoch numbers, NME in %.

        Keys are the display names (:data:`RUN_COLUMNS` lists them in order).
        """
        row: dict[str, Any] = {"run": self.name, "task": self.task}
        m = self.metrics
        if m is not None and len(m):
            row["epochs"] = int(m["epoch"].max()) if "epoch" in m else len(m)
            if "val_nme" in m and m["val_nme"].notna().any():
                best = m.loc[m["val_nme"].idxmin()]
                row["best val NME (%)"] = 100 * float(best["val_nme"])
                row["best epoch"] = int(best["epoch"]) if "epoch" in m else None
                if "val_px_error" in m:
                    row["best val error (px)"] = float(best["val_px_error"])
            last = m.iloc[-1]
            if "val_nme" in m:
                row["last val NME (%)"] = 100 * float(last["val_nme"])
            for col, name in (("train_loss", "last train loss"), ("val_loss", "last val loss")):
                if col in m:
                    row[name] = float(last[col])
            if "seconds" in m:
                row["minutes"] = round(float(m["seconds"].sum()) / 60, 2)
        row["training loss"] = self.loss_name
        return row

    @property
    def loss_name(self) -> str | None:
        """The training loss named in the config (``loss.name``), e.g. "integral"."""
        loss = self.config.get("loss")
        if isinstance(loss, dict) and loss.get("name"):
            return str(loss["name"])
        return None

    @property
    def val_loss_differs(self) -> bool:
        """True when the logged val_loss is not the training loss: heatmap losses validate with
        an L1 on normalised coordinates (kpcore.training.train.evaluate_loader)."""
        name = self.loss_name
        if not name:
            return False
        try:
            from kpcore.training.losses import create_loss

            loss = self.config.get("loss", {})
            return bool(create_loss(name, scale=1.0, **(loss.get("kwargs") or {})).needs_heatmaps)
        except (ImportError, KeyError, TypeError, ValueError):
            return False


RUN_COLUMNS = ["run", "task", "epochs", "best val NME (%)", "best epoch", "best val error (px)",
               "last val NME (%)", "last train loss", "last val loss", "training loss", "minutes"]


def read_run(path: Path) -> Run:
    """Read one run folder; missing files give None fields, never an error."""
    config: dict = {}
    for name in ("config.yaml", "config.yml", "config.json"):
        if (path / name).is_file():
            config = read_json(path / name) if name.endswith(".json") else read_yaml(path / name)
            break
    metrics = pd.read_csv(path / "metrics.csv") if (path / "metrics.csv").is_file() else None
    best = path / "best" / "config.json"
    return Run(path.name, path, config, metrics, read_json(best) if best.is_file() else None)


def list_runs() -> list[Run]:
    """Every run folder (one with metrics.csv or config.yaml), newest first."""
    found: list[Path] = []
    names: set[str] = set()  # a run in runs/ wins over its shipped copy in records/
    for root in runs_roots():
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if p.is_dir() and p.name not in names and (
                        (p / "metrics.csv").is_file() or (p / "config.yaml").is_file()):
                    found.append(p)
                    names.add(p.name)
    found.sort(key=lambda p: (-p.stat().st_mtime, p.name))
    return [read_run(p) for p in found]


def config_table(runs: list[Run], only_differences: bool = True) -> pd.DataFrame:
    """Configs side by side: one row per (flattened) key, one column per run."""
    flat = {r.name: flatten(r.config) for r in runs}
    keys = sorted({k for f in flat.values() for k in f})
    table = pd.DataFrame({name: [f.get(k) for k in keys] for name, f in flat.items()}, index=keys)
    table.index.name = "key"
    if only_differences and len(runs) > 1:
        differs = table.astype(str).nunique(axis=1) > 1
        table = table[differs]
    return table.astype(str)


# ------------------------------------------------------------------ checkpoints
@dataclass
class CheckpointInfo:
    """A checkpoint folder: ``config.json`` (+ weights, + optional ``eval/``)."""

    name: str
    path: Path
    config: dict = field(default_factory=dict)

    @property
    def layout(self) -> str | None:
        return layout_for(self.config)


def list_checkpoints() -> list[CheckpointInfo]:
    """Shipped checkpoints first, then each run's ``best/``."""
    out: list[CheckpointInfo] = []
    for root in checkpoint_roots():
        if root.is_dir():
            for p in sorted(root.iterdir()):
                config = _safe_json(p / "config.json") if (p / "config.json").is_file() else {}
                # Skip other models shipped beside ours (e.g. the ONNX face detector).
                if config.get("format") == KEYPOINT_FORMAT:
                    out.append(CheckpointInfo(p.name, p, config))
    for run in list_runs():
        best = run.path / "best"
        if (best / "config.json").is_file():
            out.append(CheckpointInfo(f"{run.name}/best", best, _safe_json(best / "config.json")))
    return out


def _safe_json(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------ per-image errors
@dataclass
class EvalSource:
    """Per-image predictions of one model on one split, and what was saved with them."""

    label: str
    folder: Path
    per_image: pd.DataFrame
    layout: str | None
    task: str | None
    summary: dict | None = None
    ced: pd.DataFrame | None = None
    thumbs: Path | None = None
    model: str = ""  # checkpoint / run / reference name
    split: str = ""  # eval folder name ("test", "test-detector", "val")
    kind: str = "checkpoint"  # "checkpoint", "run" (val_predictions.csv) or "reference" (e.g. dlib)

    @property
    def key(self) -> tuple[str | None, str]:
        """What makes two sources comparable: the same task / dataset and the same images.

        ``test`` and ``test-detector`` hold the same faces (only the box source
        differs), so both map to ``test``.
        """
        summary = self.summary or {}
        dataset = summary.get("dataset") or self.task or summary.get("task")
        base = self.split[: -len(DETECTOR_SUFFIX)] if self.split.endswith(DETECTOR_SUFFIX) else self.split
        return (str(dataset) if dataset else None, base)

    @property
    def norm_name(self) -> str:
        """What NME is divided by, e.g. "inter-ocular distance (outer eye corners 36 and 45)"."""
        return norm_name_for(self.layout, self.summary)

    @property
    def pred(self) -> np.ndarray:
        """``(N, K, 2)`` predicted points in original-image pixels."""
        return np.stack([parse_points(s) for s in self.per_image["pred"]])

    @property
    def true(self) -> np.ndarray:
        """``(N, K, 2)`` true points."""
        return np.stack([parse_points(s) for s in self.per_image["true"]])


def parse_points(text: str | list) -> np.ndarray:
    """A ``pred`` / ``true`` cell (JSON ``[[x, y], ...]``) as a ``(K, 2)`` float array."""
    data = json.loads(text) if isinstance(text, str) else text
    arr = np.asarray(data, dtype=np.float64).reshape(-1, 2)
    return arr


def _read_per_image(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = {"image", "nme", "px_error", "pred", "true"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; see docs/FORMATS.md")
    return df


def _eval_folders(root: Path) -> list[Path]:
    eval_root = root / "eval"
    if not eval_root.is_dir():
        return []
    return sorted(p for p in eval_root.iterdir() if (p / "per_image.csv").is_file())


def _eval_source(name: str, split_dir: Path, layout: str | None, task: str | None,
                 kind: str) -> EvalSource:
    summary = _safe_json(split_dir / "summary.json") if (split_dir / "summary.json").is_file() else None
    ced = pd.read_csv(split_dir / "ced.csv") if (split_dir / "ced.csv").is_file() else None
    thumbs = split_dir / "thumbs" if (split_dir / "thumbs").is_dir() else None
    per_image = _read_per_image(split_dir / "per_image.csv")
    layout = (summary or {}).get("layout") or layout
    if layout is None and len(per_image):
        layout = LAYOUT_BY_POINTS.get(len(parse_points(per_image["pred"].iloc[0])))
    # The evaluation's own task names its faces: a 300-W checkpoint evaluated on MTFL (split
    # mtfl-val) holds MTFL faces, the same set as dlib's mtfl-val, not a 300-W split.
    task = (summary or {}).get("task") or task or TASK_BY_LAYOUT.get(layout or "")
    return EvalSource(f"{name} · {split_dir.name}", split_dir, per_image, layout, task, summary, ced,
                      thumbs, model=name, split=split_dir.name, kind=kind)


def list_eval_sources() -> list[EvalSource]:
    """Every per-image table: checkpoint ``eval/<split>/`` folders, reference results saved as
    ``records/<name>/eval/<split>/`` (e.g. dlib), and runs' ``val_predictions.csv``.

    The flagship model (:data:`FLAGSHIP`) comes first, its test split before the others.
    """
    out: list[EvalSource] = []
    for ck in list_checkpoints():
        for split_dir in _eval_folders(ck.path):
            out.append(_eval_source(ck.name, split_dir, ck.layout, ck.config.get("task"), "checkpoint"))
    run_names = set()
    for run in list_runs():
        run_names.add(run.name)
        csv = run.path / "val_predictions.csv"
        if csv.is_file():
            cfg = run.best_config or run.config
            out.append(EvalSource(f"{run.name} · val (run)", run.path, _read_per_image(csv),
                                  layout_for(cfg) or layout_for(run.config), run.task,
                                  model=run.name, split="val", kind="run"))
    for root in runs_roots():  # folders that are not runs but hold saved evaluations (dlib)
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if p.is_dir() and p.name not in run_names:
                    for split_dir in _eval_folders(p):
                        out.append(_eval_source(p.name, split_dir, None, None, "reference"))
    return sorted(out, key=_source_order)


def _source_order(src: EvalSource) -> tuple:
    """Flagship first (test before test-detector), then checkpoints, references, runs."""
    kind = {"checkpoint": 1, "reference": 2, "run": 3}.get(src.kind, 4)
    return (0 if src.model == FLAGSHIP else kind, src.split != "test", src.split)


def norm_name_for(layout: str | None, summary: dict | None = None) -> str:
    """The layout's normalising distance, in words (for axis titles and captions)."""
    if summary and summary.get("norm"):
        return str(summary["norm"])
    try:
        from kpcore.data.facts import FACTS
    except ImportError:
        return "the layout's normalising distance"
    facts = FACTS.get(layout or "")
    return facts.norm_name if facts else "the layout's normalising distance"


def pct(value: float) -> str:
    """An NME (a fraction) as the percentage everyone quotes: 0.0401 -> "4.01%"."""
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.2f}%"


def ced_table(nmes: np.ndarray, threshold: float = FAILURE_NME) -> tuple[pd.DataFrame, float, float]:
    """Cumulative error curve as a table (``nme``, ``fraction``), its AUC and the failure rate."""
    levels, frac = metrics.ced(nmes, threshold)
    return (pd.DataFrame({"nme": levels, "fraction": frac}), metrics.auc(nmes, threshold),
            metrics.failure_rate(nmes, threshold))


def mean_shape(points: np.ndarray) -> np.ndarray:
    """Average ``(K, 2)`` shape of ``(N, K, 2)`` point sets after removing position and scale."""
    pts = np.asarray(points, dtype=np.float64)
    centred = pts - np.nanmean(pts, axis=1, keepdims=True)
    size = np.sqrt(np.nanmean(np.sum(centred**2, axis=-1), axis=1))[:, None, None]
    size[size == 0] = 1.0
    return np.nanmean(centred / size, axis=0)


# --------------------------------------------------------------------- thumbs
@dataclass(frozen=True)
class Thumb:
    """A saved overlay ``thumbs/<kind>_<rank>_<id>.jpg``."""

    kind: str  # "worst" or "best"
    rank: int
    image_id: str
    path: Path


def list_thumbs(folder: Path | None) -> list[Thumb]:
    """Thumbnails in an eval ``thumbs/`` folder, worst first then best, by rank."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _THUMB_NAME.match(p.stem)
        if m and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
            out.append(Thumb(m.group(1), int(m.group(2)), m.group(3), p))
    out.sort(key=lambda t: (t.kind != "worst", t.rank))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()


def thumb_for(folder: Path | None, image_id: str) -> Path | None:
    """The saved thumbnail of ``image_id``, if one was saved."""
    want = {_slug(image_id), _slug(Path(image_id.split("#")[0]).stem)}
    for t in list_thumbs(folder):
        slug = _slug(t.image_id)
        if slug in want or any(w.endswith(slug) or slug.endswith(w) for w in want if w):
            return t.path
    return None


def thumb_row(src: EvalSource, thumb_id: str) -> int | None:
    """The per-image row of a thumbnail (its file name is a slug of the image id), or None."""
    row = row_of(src, thumb_id)
    if row is not None:
        return row
    slug = _slug(thumb_id)
    for i, v in enumerate(src.per_image["image"].astype(str)):
        if _slug(v.split("#")[0].rsplit(".", 1)[0]).endswith(slug) or _slug(v).endswith(slug):
            return i
    return None


# --------------------------------------------------------------------- images
def dataset_image_path(task: str | None, image_id: str) -> Path | None:
    """The original image of ``image_id`` under the data root (``$KPCORE_DATA``), if present."""
    raw = Path(image_id.split("#")[0])
    if raw.is_absolute():
        return raw if raw.is_file() else None
    try:
        from kpcore.data import dataset_dir, get_task
    except ImportError:
        return None
    candidates = []
    if task:
        try:
            candidates.append(get_task(task).dataset)
        except KeyError:
            pass
    candidates += [d for d in ("imm", "ibug300w") if d not in candidates]
    # Ids are paths relative to the dataset folder; IMM ids are file stems ("01-1m").
    names = [raw] + ([raw.with_name(raw.name + s) for s in IMAGE_SUFFIXES] if not raw.suffix else [])
    for dataset in candidates:
        try:
            folder = dataset_dir(dataset)
        except (FileNotFoundError, KeyError):
            continue
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


# ---------------------------------------------------------------- benchmarks
def load_bench(path: Path | None = None) -> pd.DataFrame | None:
    """``benchmarks/bench.json`` as a table, or None when it was not written yet."""
    path = path or bench_path()
    if not path.is_file():
        return None
    rows = read_json(path)
    if isinstance(rows, dict):  # tolerate {"rows": [...]}
        rows = rows.get("rows", [rows])
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- comparison
TAIL_PERCENTILES = (90, 95, 99)


def comparable_groups(sources: list[EvalSource]) -> dict[tuple, list[EvalSource]]:
    """Sources grouped by :attr:`EvalSource.key` (same task / dataset and split), in source order."""
    groups: dict[tuple, list[EvalSource]] = {}
    for src in sources:
        groups.setdefault(src.key, []).append(src)
    return groups


def group_label(key: tuple) -> str:
    task, split = key
    return f"{task or '?'} · {split}"


def aligned_nme(sources: list[EvalSource]) -> pd.DataFrame:
    """Per-image NME of each source on the images all of them have: index image id, one
    column per source label. An image listed twice in one table keeps its first row."""
    cols = {}
    for src in sources:
        df = src.per_image.drop_duplicates("image")
        cols[src.label] = pd.Series(df["nme"].to_numpy(dtype=float), index=df["image"].astype(str))
    table = pd.DataFrame(cols).dropna()
    table.index.name = "image"
    return table


def row_of(src: EvalSource, image_id: str) -> int | None:
    """Position of ``image_id`` in ``src.per_image`` (first match), or None."""
    hits = np.flatnonzero(src.per_image["image"].astype(str).to_numpy() == str(image_id))
    return int(hits[0]) if len(hits) else None


def tail_row(label: str, nme: np.ndarray, threshold: float = FAILURE_NME) -> dict[str, Any]:
    """One model's row of the comparison table; NME values in % of the normalising distance."""
    nme = np.asarray(nme, dtype=float)
    row: dict[str, Any] = {"model": label, "images": len(nme),
                           "NME (%)": 100 * float(nme.mean()) if len(nme) else np.nan,
                           "median (%)": 100 * float(np.median(nme)) if len(nme) else np.nan}
    for q in TAIL_PERCENTILES:
        row[f"P{q} (%)"] = 100 * float(np.percentile(nme, q)) if len(nme) else np.nan
    row[f"failure rate @ {100 * threshold:g}% (%)"] = 100 * metrics.failure_rate(nme, threshold)
    row[f"AUC @ {100 * threshold:g}%"] = metrics.auc(nme, threshold) if len(nme) else np.nan
    return row


def tail_table(aligned: pd.DataFrame) -> pd.DataFrame:
    """NME, failure rate, AUC and the P90 / P95 / P99 error of each column of :func:`aligned_nme`."""
    return pd.DataFrame([tail_row(c, aligned[c].to_numpy()) for c in aligned.columns])


def improved_worsened(a: np.ndarray, b: np.ndarray, threshold: float) -> dict[str, int]:
    """How many faces model B improves / worsens by more than ``threshold`` (NME, a fraction) vs A."""
    d = np.asarray(b, float) - np.asarray(a, float)
    return {"improved": int(np.sum(d < -threshold)), "worsened": int(np.sum(d > threshold)),
            "same": int(np.sum(np.abs(d) <= threshold))}


# -------------------------------------------------------------------- slices
def norm_distances(src: EvalSource) -> np.ndarray:
    """``(N,)`` each image's normalising distance in pixels (``px_error / nme``)."""
    df = src.per_image
    nme = df["nme"].to_numpy(dtype=float)
    return np.where(nme > 0, df["px_error"].to_numpy(dtype=float) / np.where(nme > 0, nme, 1), np.nan)


def region_names(layout_groups: dict[str, list[int]]) -> dict[str, list[int]]:
    """Face regions from a layout's groups, left and right merged: jaw, brows, nose, eyes, mouth."""
    out: dict[str, list[int]] = {}
    for name, ids in layout_groups.items():
        base = name.split("_")[-1]
        base = {"brow": "brows", "eye": "eyes"}.get(base, base)
        out.setdefault(base, []).extend(ids)
    return out


def region_errors(src: EvalSource) -> pd.DataFrame:
    """Mean NME (%) of the points of each face region: columns ``region, nme_pct, points``."""
    from kpcore.data.facts import FACTS

    facts = FACTS.get(src.layout or "")
    if facts is None or facts.num_points < 2:
        return pd.DataFrame(columns=["region", "nme_pct", "points"])
    errs = metrics.point_errors(src.pred, src.true) / norm_distances(src)[:, None]
    rows = [{"region": region, "nme_pct": 100 * float(np.nanmean(errs[:, ids])), "points": len(ids)}
            for region, ids in region_names(facts.groups).items()]
    return pd.DataFrame(rows)


def face_size_bins(sizes: np.ndarray, n_bins: int = 4) -> pd.Series:
    """Quantile bins of face size in pixels, labelled by their pixel range (e.g. "62-85 px")."""
    sizes = pd.Series(np.asarray(sizes, float))
    edges = np.unique(np.nanquantile(sizes, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        return pd.Series(pd.Categorical(["all"] * len(sizes)))
    labels = [f"{edges[i]:.0f}-{edges[i + 1]:.0f} px" for i in range(len(edges) - 1)]
    return pd.cut(sizes, edges, labels=labels, include_lowest=True, duplicates="drop")


YAW_EDGES = (0, 15, 30, 45, 90)  # |yaw| bin edges in degrees


def yaw_bins(yaw: np.ndarray) -> pd.Series:
    """``|yaw|`` in degrees to bins such as "15-30°"."""
    labels = [f"{a}-{b}°" for a, b in zip(YAW_EDGES[:-1], YAW_EDGES[1:], strict=True)]
    return pd.cut(pd.Series(np.abs(np.asarray(yaw, float))), list(YAW_EDGES), labels=labels,
                  include_lowest=True)


POSE_FRAME = 4.0  # assumed frame side / face extent when the image size is not saved


def estimate_yaw(true_points: np.ndarray) -> np.ndarray | None:
    """Yaw in degrees of each ``(K, 2)`` 68-point shape, from ``kpcore.live.pose.estimate_pose``;
    None when that module is not in this checkout.

    per_image.csv does not save the image size, which sets the assumed camera (focal length =
    longer side, centre = image centre); each face is placed at the centre of a square frame
    :data:`POSE_FRAME` times its extent, a typical portrait framing.
    """
    try:
        from kpcore.live.pose import estimate_pose
    except ImportError:
        return None
    out = []
    for pts in np.asarray(true_points, float):
        centre = (np.nanmin(pts, axis=0) + np.nanmax(pts, axis=0)) / 2
        side = max(POSE_FRAME * float(np.nanmax(np.ptp(pts, axis=0))), 32.0)
        try:
            pose = estimate_pose(pts - centre + side / 2, (int(side), int(side)))
        except (ValueError, np.linalg.LinAlgError):
            pose = None
        out.append(float(pose["yaw"]) if pose else np.nan)
    return np.asarray(out)


def sliced_nme(values: dict[str, np.ndarray], bins: pd.Series) -> pd.DataFrame:
    """Mean NME (%) per bin and model: columns ``bin, model, nme_pct, images``. Bins keep their
    categorical order (e.g. small to large faces), else the order they first appear in."""
    rows = []
    bins = bins.reset_index(drop=True)
    if isinstance(bins.dtype, pd.CategoricalDtype):
        order = list(bins.cat.categories)
    else:
        order = [b for b in dict.fromkeys(bins) if isinstance(b, str) and b != "nan"]
    for model, nme in values.items():
        s = pd.Series(np.asarray(nme, float))
        for b in order:
            mask = (bins == b).to_numpy()
            rows.append({"bin": b, "model": model, "nme_pct": 100 * float(s[mask].mean()),
                         "images": int(mask.sum())})
    return pd.DataFrame(rows, columns=["bin", "model", "nme_pct", "images"])


def flagging_curve(nme: np.ndarray, confidence: np.ndarray, steps: int = 21,
                   max_flagged: float = 0.5) -> pd.DataFrame:
    """Mean NME (%) left when the least confident X% of faces are flagged (set aside), and the
    same for an oracle that flags the worst faces: columns ``flagged_pct, nme_pct, oracle_pct``."""
    nme = np.asarray(nme, float)
    conf = np.asarray(confidence, float)
    ok = np.isfinite(nme) & np.isfinite(conf)
    nme, conf = nme[ok], conf[ok]
    by_conf = nme[np.argsort(conf, kind="stable")]  # least confident first
    by_err = np.sort(nme)[::-1]  # worst first
    rows = []
    for frac in np.linspace(0, max_flagged, steps):
        k = int(round(frac * len(nme)))
        rows.append({"flagged_pct": 100 * frac,
                     "nme_pct": 100 * float(by_conf[k:].mean()) if k < len(nme) else np.nan,
                     "oracle_pct": 100 * float(by_err[k:].mean()) if k < len(nme) else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- robustness
ROBUSTNESS_FILE = "robustness.csv"


def robustness_table(src: EvalSource) -> pd.DataFrame | None:
    """``<eval>/<split>/robustness.csv`` (``kpcore evaluate --perturb``), or None."""
    path = src.folder / ROBUSTNESS_FILE
    if src.kind == "run" or not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = {"perturbation", "strength", "nme"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; rewrite it with "
                         f"`kpcore evaluate MODEL --perturb ...`")
    return df
