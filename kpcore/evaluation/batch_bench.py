"""``kpcore bench --sections batch``: photos per second of the batch engines beside dlib and MediaPipe.

The same real photos for every method, in one run: 300-W's helen test set and
AFW and MTFL photos (LFW and web halves) from the data root, 1,000 by default.
Each method's time is the whole job a user runs, decoding included:

* ``local``: :func:`kpcore.live.batch.run_batch` with 1 and 2 worker processes
  (the cores split between them), model loading and process start included;
* ``ray``: the same on Ray Data (``map_batches``) with 2 actors on a local Ray
  started beforehand (``ray.init`` and the driver's ``import ray.data``, 0.5 s
  once per process, are not timed; actor start, with the actors' own imports, is);
* ``dlib``: HOG face detector (no upsampling, its fastest setting) and the
  68-point regression trees on every face, the FFHQ recipe's landmarks, one
  process (dlib runs on one thread);
* ``mediapipe``: Face Mesh, ``static_image_mode=True, max_num_faces=10``, in
  the current interpreter when it has mediapipe, else in
  ``$KPCORE_MEDIAPIPE_PYTHON`` (a Python whose environment has it: mediapipe
  0.10.21 pins numpy 1.x), else skipped.

Each method runs :data:`BENCH_ROUNDS` times in a rotated order and keeps its
fastest run (all are listed in ``photos_per_s_runs``, with the machine's 1-minute
load average just before each in ``load_before_runs``: on a shared machine the
others' load changes a 2-process run more than a 1-process one). dlib and MediaPipe decode with OpenCV and shrink photos above 2048 px on the
longer side as kpcore's loader does. A ``resume`` row kills a 2-worker run
with SIGKILL half-way, runs the same command again and counts the faces lost
or repeated against the uninterrupted 1-worker table.

Then the 2-worker, Ray, dlib and MediaPipe rows again on :data:`LARGE_BATCH_PHOTOS`
photos (the same 1,000 first), :data:`LARGE_ROUNDS` rounds: each job's start-up (worker
processes or Ray actors, models loaded) is timed with it and is a smaller share of a larger
collection. The ``photos`` field tells the two apart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..data.imageio import DEFAULT_MAX_SIDE

BATCH_PHOTOS = 1000
LARGE_BATCH_PHOTOS = 4000
"""A second collection, measured after the first (the 1,000 and 3,000 more MTFL photos)."""
LARGE_ROUNDS = 2
BENCH_ROUNDS = 3
"""Each method runs this many times, in rotated order; the fastest run is its row."""
MEDIAPIPE_ENV = "KPCORE_MEDIAPIPE_PYTHON"
"""A Python interpreter with mediapipe installed, for the MediaPipe row (optional)."""
SOURCES = ("ibug_300W_subset/helen/testset", "ibug_300W_subset/afw", "mtfl/lfw_5590", "mtfl/net_7876")
"""Photo folders under the data root: the 300-W ones whole, MTFL's two halves share the rest."""

_PHOTO_LOOP = r"""
import json, sys, time
import cv2
MAX_SIDE = {max_side}

def load(path):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    h, w = bgr.shape[:2]
    if max(h, w) > MAX_SIDE:
        f = MAX_SIDE / max(h, w)
        bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

paths = json.load(open(sys.argv[1]))
"""

_MEDIAPIPE = _PHOTO_LOOP + r"""
import mediapipe as mp
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=10)
faces = found = 0
t0 = time.perf_counter()
for p in paths:
    rgb = load(p)
    if rgb is None:
        continue
    result = mesh.process(rgb)
    n = len(result.multi_face_landmarks or [])
    faces += n
    found += n > 0
print(json.dumps({"seconds": time.perf_counter() - t0, "faces": faces, "photos_with_face": found,
                  "version": mp.__version__}))
"""

_DLIB = _PHOTO_LOOP + r"""
import dlib
detector = dlib.get_frontal_face_detector()
shape = dlib.shape_predictor(sys.argv[2])
faces = found = 0
t0 = time.perf_counter()
for p in paths:
    rgb = load(p)
    if rgb is None:
        continue
    boxes = detector(rgb, 0)
    for box in boxes:
        pts = [(q.x, q.y) for q in shape(rgb, box).parts()]
    faces += len(boxes)
    found += len(boxes) > 0
print(json.dumps({"seconds": time.perf_counter() - t0, "faces": faces, "photos_with_face": found,
                  "version": dlib.__version__}))
"""


def batch_photos(data_root=None, n: int = BATCH_PHOTOS) -> list[Path]:
    """``n`` real photos: helen/testset and AFW whole, then MTFL's two halves in equal shares (sorted)."""
    from ..data import resolve_data_root

    root = resolve_data_root(data_root)
    found = [sorted(p for p in (root / folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
             for folder in SOURCES]
    out = [p for files in found[:2] for p in files][:n]
    rest = n - len(out)
    out += found[2][:rest // 2]
    out += found[3][:n - len(out)]
    return out


def _helper_python(module: str, env: str | None) -> str | None:
    """This interpreter when it can import ``module``, else the one named in ``$env``, else None."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return sys.executable
    other = os.environ.get(env) if env else None
    return other if other and Path(other).is_file() else None


def _run_loop(python: str, script: str, photos_json: Path, *args: str) -> dict:
    code = script.replace("{max_side}", str(DEFAULT_MAX_SIDE))
    result = subprocess.run([python, "-c", code, str(photos_json), *args], capture_output=True, text=True,
                            timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(method: str, photos: int, seconds: float, faces: int, **extra) -> dict:
    return {"section": "batch", "method": method, "photos": photos, "faces": faces, "seconds": round(seconds, 2),
            "photos_per_s": round(photos / seconds, 2), **extra}


def batch_rows(data_root=None, model: str = "face68-300w", quick: bool = False,
               rounds: int = BENCH_ROUNDS, large: int | None = LARGE_BATCH_PHOTOS) -> list[dict]:
    """The batch section's rows (see the module docstring); ``quick`` uses 100 photos and one round.

    Every method runs once per round, in a rotated order; its row is its fastest round
    (``photos_per_s_runs`` lists them all): on a shared machine the others' load only slows
    a run down, so the fastest is the closest to the method's own cost. With ``large`` (not in
    ``quick``), the 2-worker, Ray, dlib and MediaPipe rows are measured again on that many
    photos, :data:`LARGE_ROUNDS` rounds: a job's start-up is a smaller share of a larger one.
    """
    from ..live.batch import available_cores
    from .reference import DlibLandmarks

    photos = batch_photos(data_root, 100 if quick else BATCH_PHOTOS)
    if not photos:
        print("batch section skipped: no 300-W or MTFL photos under the data root")
        return []
    cores = available_cores()
    python = _helper_python("mediapipe", MEDIAPIPE_ENV)
    dlib = DlibLandmarks.available()
    if not dlib:
        print("batch section: no dlib row (pip install dlib-bin; apt-get install libdlib-data)")
    if not python:
        print(f"batch section: no MediaPipe row (not importable here; set ${MEDIAPIPE_ENV} to a Python with "
              f"mediapipe)")
    ray_started = _start_ray(cores)
    ray = ray_started[0] if ray_started else None
    try:
        rows = _collection_rows(photos, model, 1 if quick else rounds, cores, ray is not None, dlib, python,
                                first=True)
        if large and not quick:
            more = batch_photos(data_root, large)
            if len(more) > len(photos):
                rows += _collection_rows(more, model, LARGE_ROUNDS, cores, ray is not None, dlib, python,
                                         first=False)
    finally:
        if ray_started and ray_started[1]:
            ray.shutdown()
    return rows


def _collection_rows(photos: list[Path], model: str, rounds: int, cores: int, ray: bool, dlib: bool,
                     python: str | None, first: bool) -> list[dict]:
    """The rows of one collection. ``first``: also the 1-worker row (the others' reference
    table) and the SIGKILL + resume row; else the 2-worker table is the reference."""
    from ..live.batch import read_table, run_batch
    from .reference import DlibLandmarks

    with tempfile.TemporaryDirectory(prefix="kpcore-batch-bench-") as tmp:
        tmp = Path(tmp)
        listing = tmp / "photos.txt"
        listing.write_text("\n".join(str(p) for p in photos) + "\n")
        (tmp / "photos.json").write_text(json.dumps([str(p) for p in photos]))
        tables: dict = {}

        def local(workers: int):
            def run(i: int) -> dict:
                out = tmp / f"local{workers}-{i}.parquet"
                s = run_batch([listing], out, model=model, workers=workers)
                tables.setdefault(workers, read_table(out))
                return _row(f"kpcore local, {workers} worker{'s' if workers > 1 else ''}", s["inputs"], s["seconds"],
                            s["faces"], engine="local", workers=workers, threads=max(1, cores // workers),
                            no_face=s["no_face"], unreadable=s["unreadable"])
            return run

        def ray_run(i: int) -> dict:
            out = tmp / f"ray-{i}.parquet"
            s = run_batch([listing], out, model=model, workers=2, engine="ray")
            return _row("kpcore Ray Data, 2 actors", s["inputs"], s["seconds"], s["faces"], engine="ray", workers=2,
                        threads=max(1, cores // 2),
                        max_diff_vs_local_px=_max_point_diff(read_table(out), tables[reference]))

        def dlib_run(i: int) -> dict:
            r = _run_loop(sys.executable, _DLIB, tmp / "photos.json", str(DlibLandmarks().path))
            return _row("dlib HOG + 68-point ERT", len(photos), r["seconds"], r["faces"], engine="dlib", workers=1,
                        threads=1, upsample=0, photos_with_face=r["photos_with_face"], version=r["version"])

        def mediapipe_run(i: int) -> dict:
            r = _run_loop(python, _MEDIAPIPE, tmp / "photos.json")
            return _row("MediaPipe Face Mesh", len(photos), r["seconds"], r["faces"], engine="mediapipe", workers=1,
                        threads=None, photos_with_face=r["photos_with_face"], version=r["version"], python=python)

        reference = 1 if first else 2  # its table is made before the Ray run's (first in round 0)
        methods = {"local1": local(1)} if first else {}
        methods["local2"] = local(2)
        if ray:
            methods["ray"] = ray_run
        if dlib:
            methods["dlib"] = dlib_run
        if python:
            methods["mediapipe"] = mediapipe_run
        best: dict[str, dict] = {}
        runs: dict[str, list[float]] = {}
        loads: dict[str, list[float]] = {}
        names = list(methods)
        first_name = f"local{reference}"
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            if i == 0:  # the reference table is made first
                order = [first_name] + [n for n in order if n != first_name]
            for name in order:
                load = round(os.getloadavg()[0], 2)  # the machine's 1-minute load just before the run
                row = {**methods[name](i), "load_before": load}
                print(row, flush=True)
                runs.setdefault(name, []).append(row["photos_per_s"])
                loads.setdefault(name, []).append(load)
                if name not in best or row["photos_per_s"] > best[name]["photos_per_s"]:
                    best[name] = row
        rows = [{**best[n], "rounds": len(runs[n]), "photos_per_s_runs": runs[n], "load_before_runs": loads[n]}
                for n in names]
        if first:
            rows.append(_resume_row(listing, tmp, tables[1], model))
            print(rows[-1], flush=True)
    dlib_row = best.get("dlib")
    fastest_local = max(best[n]["photos_per_s"] for n in names if n.startswith("local"))
    for r in rows:
        if dlib_row and "photos_per_s" in r:
            r["vs_dlib"] = round(r["photos_per_s"] / dlib_row["photos_per_s"], 2)
        if r.get("engine") == "ray":
            r["vs_local"] = round(r["photos_per_s"] / fastest_local, 2)
    return rows


def _start_ray(cores: int):
    """``(ray, started here)``: a local Ray for the Ray rows (its start is not timed), or None without Ray."""
    try:
        import ray
    except ImportError:
        print("batch section: no Ray row (pip install 'ray[data]')")
        return None
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    import ray.data  # noqa: F401  (once per process, like ray.init: not a cost of each run)
    return ray, started


def _max_point_diff(a, b) -> float | None:
    """Largest difference of any number between two tables sorted by source, frame, face (None: rows differ)."""
    import numpy as np

    da = a.to_pandas().sort_values(["source", "frame", "face"]).reset_index(drop=True)
    db = b.to_pandas().sort_values(["source", "frame", "face"]).reset_index(drop=True)
    if len(da) != len(db) or da["source"].tolist() != db["source"].tolist():
        return None
    cols = [c for c in da.columns if c[:1] in "xy" and c[1:].isdigit()]
    return float(np.nanmax(np.abs(da[cols].to_numpy(float) - db[cols].to_numpy(float)), initial=0.0))


def _resume_row(listing: Path, tmp: Path, reference, model: str) -> dict:
    """SIGKILL a 2-worker run once a third of its parts are written, run it again, count faces lost/repeated."""
    from ..live.batch import read_table

    out = tmp / "resume.parquet"
    parts = tmp / "resume.parquet.parts"
    cmd = [sys.executable, "-m", "kpcore", "predict", str(listing), "--out", str(out), "--workers", "2",
           "--model", model]
    env = {**os.environ, "KPCORE_PROGRESS": "0"}
    n_photos = len(listing.read_text().split())
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    while proc.poll() is None:
        done = len(list(parts.glob("part-*.parquet")))
        if done * 32 >= n_photos / 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    rows_at_kill = len(read_table(parts)) if parts.is_dir() and list(parts.glob("part-*")) else 0
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    resumed = read_table(out).to_pandas()
    ref = reference.to_pandas()
    key = ["source", "frame", "face"]
    faces = lambda df: df[df["status"].isin(["ok", "low_confidence"])]  # noqa: E731
    merged = faces(ref)[key].merge(faces(resumed)[key], how="left", on=key, indicator=True)
    return {"section": "batch", "method": "SIGKILL + resume (2 workers)", "photos": n_photos,
            "killed": killed, "parts_at_kill": done, "rows_at_kill": rows_at_kill,
            "resume_seconds": round(time.perf_counter() - t0, 2),
            "faces": int(len(faces(resumed))), "faces_lost": int((merged["_merge"] == "left_only").sum()),
            "rows_repeated": int(resumed.duplicated(key).sum())}
