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

from kpcore import metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV = "KPCORE_RUNS"
CHECKPOINTS_ENV = "KPCORE_CHECKPOINTS"
BENCH_ENV = "KPCORE_BENCH"
KEYPOINT_FORMAT = "kpcore-checkpoint"  # config.json "format" of a keypoint checkpoint

# Cumulative error curves run from NME 0 to this; above it an image is a failure.
FAILURE_NME = metrics.FAILURE_THRESHOLD

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".bmp")
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
        """One row for the comparison table: best and last epoch numbers."""
        row: dict[str, Any] = {"run": self.name, "task": self.task}
        m = self.metrics
        if m is not None and len(m):
            row["epochs"] = int(m["epoch"].max()) if "epoch" in m else len(m)
            if "val_nme" in m and m["val_nme"].notna().any():
                best = m.loc[m["val_nme"].idxmin()]
                row["best_val_nme"] = float(best["val_nme"])
                row["best_epoch"] = int(best["epoch"]) if "epoch" in m else None
                if "val_px_error" in m:
                    row["best_val_px_error"] = float(best["val_px_error"])
            last = m.iloc[-1]
            for col in ("train_loss", "val_loss", "val_nme"):
                if col in m:
                    row[f"last_{col}"] = float(last[col])
            if "seconds" in m:
                row["minutes"] = round(float(m["seconds"].sum()) / 60, 2)
        return row


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


def list_eval_sources() -> list[EvalSource]:
    """Every per-image table: checkpoint ``eval/<split>/`` folders and runs' ``val_predictions.csv``."""
    out: list[EvalSource] = []
    for ck in list_checkpoints():
        eval_root = ck.path / "eval"
        if not eval_root.is_dir():
            continue
        for split_dir in sorted(p for p in eval_root.iterdir() if (p / "per_image.csv").is_file()):
            summary = _safe_json(split_dir / "summary.json") if (split_dir / "summary.json").is_file() else None
            ced = pd.read_csv(split_dir / "ced.csv") if (split_dir / "ced.csv").is_file() else None
            thumbs = split_dir / "thumbs" if (split_dir / "thumbs").is_dir() else None
            out.append(EvalSource(f"{ck.name} · {split_dir.name}", split_dir,
                                  _read_per_image(split_dir / "per_image.csv"), ck.layout,
                                  ck.config.get("task"), summary, ced, thumbs))
    for run in list_runs():
        csv = run.path / "val_predictions.csv"
        if csv.is_file():
            cfg = run.best_config or run.config
            out.append(EvalSource(f"{run.name} · val (run)", run.path, _read_per_image(csv),
                                  layout_for(cfg) or layout_for(run.config), run.task))
    return out


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
