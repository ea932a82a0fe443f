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

from .checkpoint import CONFIG_FILE, FORMAT, WEIGHTS_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "bench.json"
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
    from .train import cpu_has_fast_bf16

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
    from .data.datasets import get_task, load_split
    from .data.loader import KeypointDataset
    from .transforms import AugmentConfig

    try:
        samples = load_split(task, "train", data_root)[:n]
    except FileNotFoundError:
        return None
    ds = KeypointDataset(samples, get_task(task).facts, spec, AugmentConfig(), progress=False)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return round(len(ds) / (time.perf_counter() - t0), 1)


def photo_latency(folder: Path, repeats: int, data_root=None) -> dict | None:
    """End-to-end median ms for a 1280x960 photo with one face: detect + points + overlay."""
    from .data.datasets import load_split
    from .data.loader import decode_rgb
    from .predict import Predictor
    from .render import draw_keypoints

    try:
        sample = load_split("ibug300w", "test", data_root)[0]
    except FileNotFoundError:
        return None
    import cv2

    img = cv2.resize(decode_rgb(sample.image_path), PHOTO_SIZE, interpolation=cv2.INTER_LINEAR)
    pred = Predictor.from_pretrained(folder)
    pred.detector()  # load once

    def run():
        faces = pred.predict(img)
        out = img
        for f in faces:
            out = draw_keypoints(out, f.points, layout=pred.facts)
        return out

    n_faces = len(pred.predict(img))
    detect_ms = _median_ms(lambda: pred.detector().detect(img), repeats)
    total_ms = _median_ms(run, repeats)
    return {"photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}", "faces": n_faces, "detect_ms": round(detect_ms, 1),
            "end_to_end_ms": round(total_ms, 1)}


def dlib_row(data_root, repeats: int) -> dict | None:
    """dlib's 68-point shape predictor on the same test boxes, if dlib and its model file are here."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return None
    path = Path(os.environ.get("KPCORE_DLIB_PREDICTOR", CHECKPOINTS / "shape_predictor_68_face_landmarks.dat"))
    if not path.exists():
        return None
    import dlib

    from .data.datasets import load_split
    from .data.loader import decode_rgb
    from .metrics import summarize

    sp = dlib.shape_predictor(str(path))
    samples = load_split("ibug300w", "test", data_root)
    preds = []
    for s in samples:
        img = decode_rgb(s.image_path)
        left, top, w, h = s.box
        rect = dlib.rectangle(int(left), int(top), int(left + w - 1), int(top + h - 1))
        shape = sp(img, rect)
        preds.append([(shape.part(i).x, shape.part(i).y) for i in range(68)])
    summary = summarize(np.array(preds, float), np.stack([s.points for s in samples]),
                        np.array([s.norm_distance for s in samples]))
    img = decode_rgb(samples[0].image_path)
    left, top, w, h = samples[0].box
    rect = dlib.rectangle(int(left), int(top), int(left + w - 1), int(top + h - 1))
    return {"model": "dlib shape_predictor_68", "task": "ibug300w", "split": "test", "n": summary["n"],
            "nme": summary["nme"], "mean_px_error": summary["mean_px_error"],
            "latency_ms_b1": round(_median_ms(lambda: sp(img, rect), repeats), 3)}


def run_bench(json_out: str | Path | None = None, data_root=None, quick: bool = False,
              threads: int | None = None, models: list[Path] | None = None) -> list[dict]:
    """Benchmark every shipped model; print a table and write the JSON."""
    from .checkpoint import load_checkpoint
    from .data.loader import InputSpec
    from .evaluate import evaluate_model
    from .predict import Predictor

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
        if cfg["task"] == "ibug300w":
            photo = photo_latency(folder, repeats=5 if quick else 20, data_root=data_root)
            if photo:
                row.update(photo)
        rows.append(row)
        _print_row(row)
    extra = dlib_row(data_root, repeats)
    if extra:
        rows.append(extra)
        _print_row(extra)
    out = Path(json_out) if json_out else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs", "torch": torch.__version__,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.write_text(json.dumps([{**r, **meta} for r in rows], indent=2))
    print(f"written: {out}")
    return rows


def _print_row(r: dict) -> None:
    keys = ["model", "split", "n", "nme", "mean_px_error", "latency_ms_b1", "throughput_b32", "params",
            "file_mb", "train_images_per_s", "loader_images_per_s", "end_to_end_ms"]
    print("  ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r[k]}" for k in keys if k in r),
          flush=True)
