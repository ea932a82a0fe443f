"""``python -m kpcore bench``: accuracy, latency and throughput of the shipped models.

For each checkpoint in ``checkpoints/`` (those with a ``config.json`` of the
kpcore format): accuracy on its task's test split (val where there is none),
CPU latency per face at batch 1 (median of many runs, thread count stated),
throughput at batch 32, parameters and file size; training throughput and
data-loader throughput side by side; the end-to-end latency of a 1280x960
photo (detection + points + overlay). An optional row for dlib's 68-point
predictor appears when ``dlib`` and ``shape_predictor_68_face_landmarks.dat``
are present (``KPCORE_DLIB_PREDICTOR`` or under ``checkpoints/``).
Results go to ``benchmarks/bench.json`` (docs/FORMATS.md).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import CONFIG_FILE, FORMAT, WEIGHTS_FILE
from ..paths import BENCH_FILE as DEFAULT_OUT
from ..paths import CHECKPOINTS_DIR as CHECKPOINTS

PHOTO_SIZE = (1280, 960)


def shipped_models(root: Path = CHECKPOINTS) -> list[Path]:
    """Checkpoint folders under ``root`` that hold a kpcore model."""
    out = []
    for cfg in sorted(root.glob(f"*/{CONFIG_FILE}")):
        try:
            if json.loads(cfg.read_text()).get("format") == FORMAT and (cfg.parent / WEIGHTS_FILE).exists():
                out.append(cfg.parent)
        except json.JSONDecodeError:
            continue
    return out


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def time_model(model: torch.nn.Module, shape: tuple[int, int, int], repeats: int) -> dict:
    """Batch-1 latency (median ms) and batch-32 throughput (images/s) of a forward pass."""
    model.eval()
    x1 = torch.randn(1, *shape)
    x32 = torch.randn(32, *shape)
    with torch.inference_mode():
        lat = _median_ms(lambda: model(x1), repeats)
        b32 = _median_ms(lambda: model(x32), max(3, repeats // 10), warmup=1)
    return {"latency_ms_b1": round(lat, 3), "throughput_b32": round(32 / (b32 / 1000), 1)}


def train_throughput(model: torch.nn.Module, shape: tuple[int, int, int], steps: int = 3,
                     batch: int = 32, mixed_precision: str = "auto") -> float:
    """Images per second of forward + backward + AdamW step, as the trainer runs it."""
    from ..training.train import cpu_has_fast_bf16

    bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and cpu_has_fast_bf16())
    model.train()
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = out.float().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    ms = _median_ms(step, steps, warmup=1)
    return round(batch / (ms / 1000), 1)


def loader_throughput(task: str, spec, data_root, n: int = 256) -> float | None:
    """Images per second of the augmented training pipeline (cache built beforehand), one process."""
    from ..data.datasets import get_task, load_split
    from ..data.loader import KeypointDataset
    from ..data.transforms import AugmentConfig

    try:
        samples = load_split(task, "train", data_root)[:n]
    except FileNotFoundError:
        return None
    ds = KeypointDataset(samples, get_task(task).facts, spec, AugmentConfig(), progress=False)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return round(len(ds) / (time.perf_counter() - t0), 1)


def dlib_row(data_root, repeats: int) -> dict | None:
    """dlib's 68-point shape predictor on the same test boxes (:class:`kpcore.evaluation.reference.DlibLandmarks`)."""
    from ..data.datasets import load_split
    from ..data.loader import decode_rgb
    from .metrics import summarize
    from .reference import DlibLandmarks

    if not DlibLandmarks.available():
        return None
    try:
        samples = load_split("ibug300w", "test", data_root)
    except FileNotFoundError:  # no 300-W under this data root: no dlib row
        return None
    dl = DlibLandmarks()
    preds = np.concatenate([dl.predict_crops(decode_rgb(s.image_path), [s.box]) for s in samples])
    summary = summarize(preds.astype(float), np.stack([s.points for s in samples]),
                        np.array([s.norm_distance for s in samples]))
    img = decode_rgb(samples[0].image_path)
    return {"model": "dlib shape_predictor_68", "architecture": "regression trees (dlib)", "task": "ibug300w",
            "split": "test", "n": summary["n"], "nme": summary["nme"], "mean_px_error": summary["mean_px_error"],
            "threads": 1, "latency_ms_b1": round(_median_ms(lambda: dl.predict_crops(img, [samples[0].box]),
                                                           repeats), 3)}


def run_bench(json_out: str | Path | None = None, data_root=None, quick: bool = False,
              threads: int | None = None, models: list[Path] | None = None) -> list[dict]:
    """Benchmark every shipped model; print a table and write the JSON."""
    from ..data.loader import InputSpec
    from ..live.predict import Predictor
    from ..models.checkpoint import load_checkpoint
    from .evaluate import evaluate_model

    threads = threads or min(os.cpu_count() or 1, 2 if (os.cpu_count() or 1) <= 2 else 4)
    torch.set_num_threads(threads)
    repeats = 20 if quick else 100
    rows: list[dict] = []
    for folder in models if models is not None else shipped_models():
        model, cfg = load_checkpoint(folder)
        spec = InputSpec.from_dict(cfg["input"])
        shape = (spec.channels, spec.height, spec.width)
        row = {"model": folder.name, "architecture": cfg["model"]["name"], "task": cfg["task"],
               "input": f"{spec.width}x{spec.height} {spec.color}",
               "params": sum(p.numel() for p in model.parameters()),
               "file_mb": round((folder / WEIGHTS_FILE).stat().st_size / 2**20, 2), "threads": threads}
        try:
            summary = evaluate_model(folder, data_root=data_root, save=False,
                                     predictor=Predictor(model, cfg, folder))
            row.update({"split": summary["split"], "n": summary["n"], "nme": summary["nme"],
                        "mean_px_error": summary["mean_px_error"], "failure_rate": summary["failure_rate"],
                        "auc": summary["auc"]})
        except FileNotFoundError as e:
            row["accuracy_error"] = str(e).splitlines()[0]
        row.update(time_model(model, shape, repeats))
        row["train_images_per_s"] = train_throughput(load_checkpoint(folder)[0], shape,
                                                     steps=2 if quick else 5)
        row["loader_images_per_s"] = loader_throughput(cfg["task"], spec, data_root, n=64 if quick else 256)
        rows.append(row)
        _print_row(row)
    extra = dlib_row(data_root, repeats)
    if extra:
        rows.append(extra)
        _print_row(extra)
    out = Path(json_out) if json_out else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"section": "model", "machine": machine_description(), "torch": torch.__version__,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    old = json.loads(out.read_text()) if out.is_file() else []
    kept = [r for r in old if r.get("section", "model") != "model"]  # the speed/video sections stay
    out.write_text(json.dumps([{**r, **meta} for r in rows] + kept, indent=2))
    print(f"written: {out}")
    return rows


def _print_row(r: dict) -> None:
    keys = ["model", "split", "n", "nme", "mean_px_error", "latency_ms_b1", "throughput_b32", "params",
            "file_mb", "train_images_per_s", "loader_images_per_s"]
    print("  ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r[k]}" for k in keys if k in r),
          flush=True)


# ------------------------------------------------------------------ video: a clip with known motion
CLIP_SIZE = (640, 480)
CLIP_FRAMES = 150
CLIP_FPS = 30.0
CLIP_NOISE = 4.0
"""Standard deviation of the per-frame Gaussian sensor noise, in grey levels."""


def moving_clip(image: np.ndarray, points: np.ndarray, n_frames: int = CLIP_FRAMES,
                size: tuple[int, int] = CLIP_SIZE, face_width: float = 200.0, noise: float = CLIP_NOISE,
                seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """A real photo moved along a smooth path (shift, scale, in-plane turn) with sensor noise.

    The face (the box of ``points``) is scaled to about ``face_width`` pixels and
    placed on a Lissajous path through the frame; every frame gets independent
    Gaussian noise. The true points move with the same matrix as the pixels.

    Returns:
        ``(frames, true_points)``: RGB uint8 ``(H, W, 3)`` frames and ``(T, K, 2)`` points.
    """
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    c0 = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    base = face_width / max(x1 - x0, 1.0)
    frames, truth = [], []
    for t in range(n_frames):
        phase = 2 * np.pi * t / n_frames
        center = np.array([w / 2 + 0.15 * w * np.sin(phase), h / 2 + 0.08 * h * np.sin(2 * phase)])
        scale = base * (1 + 0.1 * np.sin(phase + 1.0))
        angle = np.deg2rad(8.0 * np.sin(phase * 1.5))
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        m = np.hstack([rot, (center - rot @ c0)[:, None]])  # pixel centres -> pixel centres
        frame = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        noisy = frame.astype(np.float32) + rng.normal(0, noise, frame.shape).astype(np.float32)
        frames.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
        truth.append(points @ rot.T + m[:, 2])
    return frames, np.stack(truth).astype(np.float32)


def video_metrics(pred: np.ndarray, truth: np.ndarray, norm_points: tuple[int, int]) -> dict:
    """NME and jitter of a tracked clip.

    Args:
        pred, truth: ``(T, K, 2)`` points per frame (NaN rows where a face was missed).
        norm_points: Point ids whose distance normalises (the outer eye corners).

    Returns:
        ``nme`` (mean over frames of the mean point error / eye distance), ``jitter``
        (RMS over frames and points of the frame-to-frame change of the error vector,
        over the eye distance: what makes points shimmer on a moving face) and
        ``missed`` (frames without a prediction).
    """
    a, b = norm_points
    eye = np.linalg.norm(truth[:, a] - truth[:, b], axis=-1)  # (T,)
    err = (pred - truth) / eye[:, None, None]
    ok = np.isfinite(err).all(axis=(1, 2))
    nme = float(np.linalg.norm(err[ok], axis=-1).mean()) if ok.any() else float("nan")
    both = ok[1:] & ok[:-1]
    step = err[1:][both] - err[:-1][both]
    jitter = float(np.sqrt((step ** 2).sum(-1).mean())) if both.any() else float("nan")
    return {"nme": nme, "jitter": jitter, "missed": int((~ok).sum()), "frames": int(len(pred))}


# ------------------------------------------------------------------ CPU speed against dlib, photo, video
SPEED_FACES = 12
WARMUP_CALLS = 5


def _onnx_folder(folder: Path, tmp: Path, data_root=None) -> Path:
    """``folder`` if its ONNX files are current, else a temporary copy with fresh ones (the repo is
    not written; an int8 file is remade, and measured, only if the folder has one)."""
    import shutil

    from ..live.onnx_runtime import (
        ONNX_FILE,
        ONNX_INT8_FILE,
        WEIGHTS_KEY,
        OnnxModel,
        weights_digest,
    )
    from ..models.onnx_export import export_onnx

    files = [folder / name for name in (ONNX_FILE, ONNX_INT8_FILE) if (folder / name).is_file()]
    if folder / ONNX_FILE in files and \
            all(OnnxModel(f).metadata.get(WEIGHTS_KEY) == weights_digest(folder) for f in files):
        return folder
    copy = tmp / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("eval", "*.onnx"))
    export_onnx(copy, int8=folder / ONNX_INT8_FILE in files, data_root=data_root)
    return copy


def landmark_speed(folder: Path, data_root=None, threads: int = 2, faces: int = SPEED_FACES,
                   repeats: int = 5) -> list[dict]:
    """ms per face at batch 1: PyTorch, onnxruntime float32, the default path (int8 where the
    checkpoint ships an accepted one) at ``threads`` and at 1 thread, and dlib, on the same faces
    and boxes, in one run.

    Each timed call is the whole per-face path (crop, normalise, network, map back;
    for dlib its own feature extraction and cascade). The methods take turns in
    rounds, each round timing every face once per method after a few warm-up
    calls, so that machine load falls on all of them alike while no method is
    timed against another's still-spinning thread pool (face-by-face interleaving
    did that: PyTorch's OpenMP threads keep spinning after a call). Rows carry
    ``default: True`` for the path ``Predictor`` takes by default.
    """
    import tempfile

    from ..data.datasets import load_split
    from ..data.imageio import load_image
    from ..live.predict import Predictor
    from .reference import DlibLandmarks

    samples = [s for s in load_split("ibug300w", "test", data_root) if s.box is not None][:faces]
    images = [load_image(s.image_path) for s in samples]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = _onnx_folder(folder, Path(tmp), data_root)
        methods = {"pytorch": Predictor.from_pretrained(folder, threads=threads, backend="torch"),
                   "onnxruntime": Predictor.from_pretrained(onnx_dir, threads=threads, backend="onnx")}
        default = Predictor.from_pretrained(onnx_dir, threads=threads)
        methods[default.backend_name] = default
        methods[f"{default.backend_name} 1 thread"] = Predictor.from_pretrained(onnx_dir, threads=1)
        calls = {name: p.predict_crops for name, p in methods.items()}
        if DlibLandmarks.available():
            calls["dlib"] = DlibLandmarks().predict_crops
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):  # rounds: A B C D, A B C D, ... so that load drift falls on all alike
            for name, fn in calls.items():
                for _ in range(WARMUP_CALLS):  # the previous method's thread pool goes idle meanwhile
                    fn(images[0], [samples[0].box])
                for img, s in zip(images, samples, strict=True):
                    t0 = time.perf_counter()
                    fn(img, [s.box])
                    times[name].append((time.perf_counter() - t0) * 1000)
    ms = {name: statistics.median(v) for name, v in times.items()}
    dlib_ms = ms.get("dlib")
    rows = []
    for name, value in ms.items():
        rows.append({"section": "speed", "model": name if name == "dlib" else folder.name, "backend": name,
                     "ms_per_face": round(value, 3), "faces": len(samples), "calls": len(times[name]),
                     "threads": 1 if name == "dlib" or name.endswith("1 thread") else threads,
                     "default": name == default.backend_name,
                     "vs_dlib": round(value / dlib_ms, 2) if dlib_ms else None})
    return rows


PHOTO_SPEED_SIZE = (640, 480)
PHOTO_SPEED_PHOTOS = 20
MEDIAPIPE_ENV = "KPCORE_MEDIAPIPE_PYTHON"
"""Environment variable naming a Python interpreter with mediapipe installed (e.g. a separate
venv: mediapipe 0.10.21 pins numpy<2); when set, the photo section times MediaPipe Face Mesh
with it (:mod:`kpcore.evaluation.mediapipe_timing`)."""


def _spread(per_round: list[list[float]]) -> list[float]:
    """The lowest and highest of the per-round medians (how much machine load moved the figure)."""
    medians = [statistics.median(r) for r in per_round if r]
    return [round(min(medians), 2), round(max(medians), 2)]


def mediapipe_photo_times(photos: np.ndarray, rounds: int) -> dict | None:
    """MediaPipe Face Mesh on ``photos`` in the interpreter ``$KPCORE_MEDIAPIPE_PYTHON`` names
    (None when it is unset; an error naming the variable when that interpreter fails)."""
    import subprocess
    import tempfile

    python = os.environ.get(MEDIAPIPE_ENV)
    if not python:
        return None
    script = Path(__file__).with_name("mediapipe_timing.py")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photos.npy"
        np.save(path, photos)
        done = subprocess.run([python, str(script), str(path), str(rounds)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"${MEDIAPIPE_ENV}={python} could not time MediaPipe Face Mesh "
                           f"(exit {done.returncode}): {done.stderr.strip()[-500:]}. Point it at a Python "
                           f"with mediapipe installed (pip install mediapipe==0.10.21), or unset it.")
    return json.loads(done.stdout.strip().splitlines()[-1])


def photo_split(folder: Path, data_root=None, threads: int = 2, repeats: int = 3,
                photos: int = PHOTO_SPEED_PHOTOS) -> list[dict]:
    """The photo path on 640x480 photos of one face: kpcore's ``Predictor.predict`` split into
    detect / points / confidence / pose, beside dlib (HOG + 68-point ERT) and MediaPipe Face Mesh
    (static mode, up to 10 faces; when ``$KPCORE_MEDIAPIPE_PYTHON`` names an interpreter with
    mediapipe), on the same decoded photos in the same run.

    The photos are the first ``photos`` of helen/testset resized to 640x480, decoded
    beforehand. kpcore is timed at ``threads`` and at 1 onnxruntime thread (on a
    shared 2-core machine the single thread can be the faster: one face's networks
    are too small to gain from a second thread that other jobs keep busy). The
    methods take turns in ``repeats`` rounds (each round times every photo once per
    method), so that load from other jobs falls on all of them alike; figures are
    medians over all calls, with the spread of the per-round medians. kpcore's parts
    are timed in separate calls on the same photo: ``detect_ms`` (the face detector),
    ``points_ms`` (crop + network, plain pass), ``confidence_ms`` (what the mirrored
    pass adds: the batched plain + mirrored call minus the plain one), ``pose_ms``
    (head pose of every face); ``ms_per_photo`` is the whole ``Predictor.predict`` call.
    """
    import cv2

    from ..data.datasets import load_split
    from ..data.inputs import decode_rgb

    try:
        samples = [s for s in load_split("ibug300w", "test", data_root)
                   if s.image_id.startswith("helen/testset")][:photos]
    except FileNotFoundError:
        return []
    images = np.stack([cv2.resize(decode_rgb(s.image_path), PHOTO_SPEED_SIZE, interpolation=cv2.INTER_AREA)
                       for s in samples])
    base = {"section": "photo", "photo": f"{PHOTO_SPEED_SIZE[0]}x{PHOTO_SPEED_SIZE[1]}", "photos": len(images),
            "rounds": repeats}
    kpcore = [_KpcorePhotoPath(folder, n) for n in dict.fromkeys((threads, 1))]
    dlib_path = _DlibPhotoPath.create()
    use_mediapipe = bool(os.environ.get(MEDIAPIPE_ENV))
    mp_times: list[list[float]] = []
    mp_faces: list[int] = []
    mp_version = ""
    for r in range(repeats):
        for method in [*kpcore, *([dlib_path] if dlib_path else [])]:
            method.round(images, count_faces=r == 0)
        if use_mediapipe:
            result = mediapipe_photo_times(images, 1)
            mp_times.append(result["ms"])
            mp_faces = mp_faces or result["faces"]
            mp_version = result["mediapipe"]
    rows = [{**base, **k.row()} for k in kpcore]
    if dlib_path:
        rows.append({**base, **dlib_path.row()})
    if use_mediapipe:
        rows.append({**base, "threads": None, "model": "mediapipe",
                     "method": f"MediaPipe Face Mesh {mp_version} (static_image_mode, max_num_faces=10)",
                     "ms_per_photo": round(statistics.median(sum(mp_times, [])), 2), "ms_spread": _spread(mp_times),
                     "faces_found": int(sum(mp_faces)),
                     "note": f"run by ${MEDIAPIPE_ENV} in its own interpreter (mediapipe pins numpy<2), one "
                             "process per round, same photos, same bench run"})
    ms = {r["model"]: r["ms_per_photo"] for r in rows}
    for r in rows:
        r["photos_per_s"] = round(1000 / r["ms_per_photo"], 1)
        r["vs_dlib"] = round(r["ms_per_photo"] / ms["dlib"], 2) if "dlib" in ms else None
        r["vs_mediapipe"] = round(r["ms_per_photo"] / ms["mediapipe"], 2) if "mediapipe" in ms else None
    return rows


class _KpcorePhotoPath:
    """kpcore's photo path at ``threads`` onnxruntime threads (BlazeFace: always 1), timed by parts."""

    PARTS = ("ms_per_photo", "detect_ms", "points_ms", "points_and_confidence_ms", "pose_ms")

    def __init__(self, folder: Path, threads: int) -> None:
        from ..live.detect import get_detector
        from ..live.predict import Predictor

        self.folder, self.threads = folder, threads
        self.pred = Predictor.from_pretrained(folder, threads=threads)
        self.pred._detector = get_detector(threads=threads)
        self.times: dict[str, list[list[float]]] = {k: [] for k in self.PARTS}
        self.found = 0

    def round(self, images: np.ndarray, count_faces: bool) -> None:
        from ..live.pose import estimate_pose

        pred = self.pred
        size = (images.shape[2], images.shape[1])
        for _ in range(WARMUP_CALLS):  # the previous method's thread pool goes idle meanwhile
            pred.predict(images[0])
        for k in self.PARTS:
            self.times[k].append([])
        for img in images:
            t0 = time.perf_counter()
            faces = pred.predict(img)
            t1 = time.perf_counter()
            dets = pred.detector().detect(img)
            t2 = time.perf_counter()
            regions = [pred.detector_region(f.box, size) for f in dets]
            pts = pred.predict_regions([img] * len(regions), regions)
            t3 = time.perf_counter()
            pred.predict_regions([img] * len(regions), regions, with_confidence=True)
            t4 = time.perf_counter()
            for p in pts:
                estimate_pose(p, size)
            t5 = time.perf_counter()
            for k, v in zip(self.PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                self.times[k][-1].append(v * 1000)
            self.found += len(faces) if count_faces else 0

    def row(self) -> dict:
        med = {k: statistics.median(sum(v, [])) for k, v in self.times.items()}
        plural = "s" if self.threads > 1 else ""
        return {"threads": self.threads, "model": self.folder.name,
                "method": f"kpcore ({self.pred.backend_name}, {self.threads} thread{plural})",
                "ms_per_photo": round(med["ms_per_photo"], 2), "ms_spread": _spread(self.times["ms_per_photo"]),
                "detect_ms": round(med["detect_ms"], 2), "points_ms": round(med["points_ms"], 2),
                "confidence_ms": round(max(med["points_and_confidence_ms"] - med["points_ms"], 0.0), 2),
                "pose_ms": round(med["pose_ms"], 2), "faces_found": self.found,
                "detector": "BlazeFace short-range, RetinaFace where needed"}


class _DlibPhotoPath:
    """dlib's own photo path: HOG face detector (no upsampling), then the 68-point predictor on each face."""

    def __init__(self) -> None:
        import dlib

        from .reference import DlibLandmarks

        self.hog = dlib.get_frontal_face_detector()
        self.landmarks = DlibLandmarks()
        self.times: list[list[float]] = []
        self.found = 0

    @classmethod
    def create(cls) -> _DlibPhotoPath | None:
        from .reference import DlibLandmarks

        return cls() if DlibLandmarks.available() else None

    def _run(self, img: np.ndarray) -> int:
        boxes = [(r.left(), r.top(), r.width(), r.height()) for r in self.hog(img, 0)]
        if boxes:
            self.landmarks.predict_crops(img, boxes)
        return len(boxes)

    def round(self, images: np.ndarray, count_faces: bool) -> None:
        for _ in range(WARMUP_CALLS):
            self._run(images[0])
        self.times.append([])
        for img in images:
            t0 = time.perf_counter()
            n = self._run(img)
            self.times[-1].append((time.perf_counter() - t0) * 1000)
            self.found += n if count_faces else 0

    def row(self) -> dict:
        return {"threads": 1, "model": "dlib", "method": "dlib HOG (upsample 0) + shape_predictor_68",
                "ms_per_photo": round(statistics.median(sum(self.times, [])), 2), "ms_spread": _spread(self.times),
                "faces_found": self.found}


TINY_SCALE = 0.35
"""The 6-face group photo shrunk by this and pasted on a 1280x960 canvas: its faces, 59-119 px
wide in the photo, become 21-42 px (the issue's tiny faces, >= 20 px)."""


def detection_recall(data_root=None, threads: int = 2) -> dict | None:
    """Faces found by the default detector (:func:`kpcore.live.detect.get_detector`: BlazeFace,
    RetinaFace where needed): helen/testset as ``kpcore calibrate`` matches them, on how many
    photos BlazeFace alone answered, and the 6-face group photo as it is and shrunk to tiny faces
    on a 1280x960 canvas (beside RetinaFace alone)."""
    from ..data.datasets import load_split
    from ..data.imageio import load_image
    from ..data.loader import decode_rgb
    from ..live.calibrate import match_detection
    from ..live.detect import FaceDetector, get_detector
    from ..paths import REPO_ROOT

    try:
        samples = [s for s in load_split("ibug300w", "test", data_root) if s.image_id.startswith("helen/testset")]
    except FileNotFoundError:
        return None
    det = get_detector(threads=threads)
    found = fast_only = 0
    for s in samples:
        image = decode_rgb(s.image_path)
        face = match_detection(det, image, s)
        found += face is not None
        fast_only += face is not None and face.detector == "blazeface"
    row = {"section": "detection", "model": "face-detector", "photos": "helen/testset", "n": len(samples),
           "found": found, "blazeface_only": fast_only, "coarse_side": det.slow.coarse_side,
           "max_side": det.slow.max_side}
    group_path = REPO_ROOT / "webapp" / "examples" / "group.jpg"
    if group_path.is_file():
        import cv2

        group = load_image(group_path)
        small = cv2.resize(group, None, fx=TINY_SCALE, fy=TINY_SCALE, interpolation=cv2.INTER_AREA)
        canvas = np.full((PHOTO_SIZE[1], PHOTO_SIZE[0], 3), 128, np.uint8)
        top, left = (PHOTO_SIZE[1] - small.shape[0]) // 2, (PHOTO_SIZE[0] - small.shape[1]) // 2
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
        retina = FaceDetector(threads=threads)
        tiny = det.detect(canvas)
        row.update({"group_found": len(det.detect(group)), "group_faces": 6,
                    "tiny_found": len(tiny), "tiny_found_retinaface": len(retina.detect(canvas)),
                    "tiny_smallest_px": round(min((min(f.box[2:]) for f in tiny), default=0.0), 1)})
    return row


def video_bench(folder: Path, data_root=None, threads: int = 2, frames: int = CLIP_FRAMES,
                per_frame_baseline: bool = True) -> list[dict]:
    """``kpcore track`` on a 640x480 clip with known motion: frames/s of the whole command, NME and jitter.

    The clip is a helen/testset photo moved along a smooth path with sensor noise
    (:func:`moving_clip`). frames/s counts the whole ``python -m kpcore track``
    process (imports, model loading, decoding, writing the CSV). Jitter and NME are
    measured with smoothing on and off, and for the per-frame photo path
    (detector + points on every frame) as the baseline.
    """
    import subprocess
    import sys
    import tempfile

    from ..data.datasets import load_split
    from ..data.imageio import load_image
    from ..live.predict import Predictor
    from ..live.track import VideoWriter, track

    try:
        sample = [s for s in load_split("ibug300w", "test", data_root) if s.image_id.startswith("helen/testset")][0]
    except (FileNotFoundError, IndexError):
        return []
    clip, truth = moving_clip(load_image(sample.image_path), sample.points, n_frames=frames)
    pred = Predictor.from_pretrained(folder, threads=threads)
    norm = pred.facts.norm_points
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        with VideoWriter(path, CLIP_FPS, CLIP_SIZE) as w:
            for f in clip:
                w.write(f)
        env = {**os.environ, "KPCORE_PROGRESS": "0"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kpcore", "track", str(path), "--csv", str(Path(tmp) / "p.csv"),
                        "--model", str(folder), "--threads", str(threads)], check=True, env=env,
                       capture_output=True)
        command_fps = frames / (time.perf_counter() - t0)
        for smooth in (False, True):
            t0 = time.perf_counter()
            pts = [r.faces[0].points if r.faces else np.full((pred.facts.num_points, 2), np.nan)
                   for r in track(clip, pred, smooth=smooth, fps=CLIP_FPS)]
            loop_fps = frames / (time.perf_counter() - t0)
            m = video_metrics(np.stack(pts), truth, norm)
            rows.append({"section": "video", "model": folder.name, "method": "kpcore track" +
                         ("" if smooth else " --no-smooth"), "clip": f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]}, {frames} frames",
                         "nme": round(m["nme"], 5), "jitter": round(m["jitter"], 5), "missed": m["missed"],
                         "loop_fps": round(loop_fps, 1),
                         "command_fps": round(command_fps, 1) if smooth else None, "threads": threads,
                         "backend": pred.backend_name})
        if per_frame_baseline:
            t0 = time.perf_counter()
            pts = []
            for f in clip:
                faces = pred.predict(f, confidence=False) if _predict_has_confidence() else pred.predict(f)
                pts.append(faces[0].points if faces else np.full((pred.facts.num_points, 2), np.nan))
            loop_fps = frames / (time.perf_counter() - t0)
            m = video_metrics(np.stack(pts), truth, norm)
            rows.append({"section": "video", "model": folder.name, "method": "photo path per frame (baseline)",
                         "clip": f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]}, {frames} frames", "nme": round(m["nme"], 5),
                         "jitter": round(m["jitter"], 5), "missed": m["missed"], "loop_fps": round(loop_fps, 1),
                         "command_fps": None, "threads": threads, "backend": pred.backend_name})
    return rows


def _predict_has_confidence() -> bool:
    import inspect

    from ..live.predict import Predictor

    return "confidence" in inspect.signature(Predictor.predict).parameters


SECTIONS = ("models", "speed", "video", "mtfl", "batch")


def mtfl_rows(folder: Path, data_root=None) -> list[dict]:
    """The model and dlib (where installed) on MTFL's validation faces: five points mapped
    from the 68, NME over the eye-centre distance, failure rate at 10%, overall and per head
    pose (:func:`kpcore.evaluation.evaluate.evaluate_model` with ``dataset="mtfl"``)."""
    from ..errors import DatasetNotFoundError
    from .evaluate import evaluate_model
    from .reference import DlibLandmarks

    methods = [str(folder)] + (["dlib"] if DlibLandmarks.available() else [])
    rows = []
    for method in methods:
        try:
            summary = evaluate_model(method, data_root=data_root, dataset="mtfl", save=False)
        except DatasetNotFoundError as e:
            print(f"mtfl section skipped: {e}")
            return []
        row = {"section": "mtfl", "model": "dlib" if method == "dlib" else folder.name, "split": "val",
               "n": summary["n"], "nme": summary["nme"], "failure_rate": summary["failure_rate"]}
        for pose in summary["by_pose"]:
            key = pose["name"].replace(" ", "_")
            row[f"failure_rate_{key}"] = pose["failure_rate"]
            row[f"n_{key}"] = pose["n"]
        rows.append(row)
    return rows


def run_speed_bench(json_out: str | Path | None = None, data_root=None, sections=SECTIONS, threads: int = 2,
                    model: Path | None = None, quick: bool = False) -> list[dict]:
    """The sections beside the model rows (speed vs dlib, photo split, detection recall, video, MTFL
    accuracy of the model and dlib); rows merge into the JSON.

    Rows of sections not run now are kept from the existing file.
    """
    folder = Path(model) if model else CHECKPOINTS / "face68-300w"
    out = Path(json_out) if json_out else DEFAULT_OUT
    rows: list[dict] = []
    torch.set_num_threads(threads)
    if "speed" in sections:
        rows += landmark_speed(folder, data_root, threads, faces=4 if quick else SPEED_FACES,
                               repeats=2 if quick else 5)
        for r in rows:
            _print_any(r)
        photo = photo_split(folder, data_root, threads, repeats=1 if quick else 3, photos=5 if quick else 20)
        recall = None if quick else detection_recall(data_root, threads)
        for r in [*photo, recall]:
            if r:
                rows.append(r)
                _print_any(r)
    if "video" in sections:
        for r in video_bench(folder, data_root, threads, frames=30 if quick else CLIP_FRAMES):
            rows.append(r)
            _print_any(r)
    if "mtfl" in sections:
        for r in mtfl_rows(folder, data_root):
            rows.append(r)
            _print_any(r)
    if "batch" in sections:  # photos/s of the batch engines beside dlib and MediaPipe (batch_bench.py)
        from .batch_bench import batch_rows

        rows += batch_rows(data_root, model=str(folder), quick=quick)
    meta = {"machine": machine_description(), "torch": torch.__version__,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rows = [{**r, **meta} for r in rows]
    ran = {r["section"] for r in rows}
    old = json.loads(out.read_text()) if out.is_file() else []
    kept = [r for r in old if r.get("section", "model") not in ran]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(kept + rows, indent=2))
    print(f"written: {out}")
    return rows


def machine_description() -> str:
    """CPU model and count, e.g. ``x86_64 AMD EPYC 7B13, 2 CPUs``."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = f"{platform.machine()} {line.split(':', 1)[1].strip()}"
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def _print_any(r: dict) -> None:
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
