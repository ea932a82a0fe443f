"""Synthetic run folders, checkpoints, eval outputs, bench.json and a tiny IMM tree.

Everything follows docs/FORMATS.md, small enough to write in milliseconds.
Builders only; the fixtures that put them in tmp dirs live in tests/test_app.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from kpcore.data.facts import IMM_FACTS
from kpcore.live.render import draw_keypoints

N_VAL = 12
IMAGE_W, IMAGE_H = 160, 120


def ring(k: int, cx: float = 80, cy: float = 60, rx: float = 30, ry: float = 38) -> np.ndarray:
    """A face-ish ring of k points (one point: the centre)."""
    if k == 1:
        return np.array([[cx, cy + 5]])
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def image_ids(n: int = N_VAL) -> list[str]:
    """IMM-style ids (file stems) of validation persons 33-40."""
    return [f"{33 + i // 6:02d}-{i % 6 + 1}{'m' if i % 2 else 'f'}" for i in range(n)]


def predictions(k: int, seed: int, n: int = N_VAL) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = np.stack([ring(k) + rng.normal(0, 2, (k, 2)) for _ in range(n)])
    scale = np.linspace(0.5, 8, n)[:, None, None]  # image i is worse than image i-1
    pred = true + rng.normal(0, 1, true.shape) * scale
    return image_ids(n), pred, true


def write_per_image(path: Path, ids: list[str], pred: np.ndarray, true: np.ndarray, norm: float) -> None:
    import pandas as pd

    px = np.linalg.norm(pred - true, axis=-1).mean(axis=1)
    pd.DataFrame({
        "image": ids, "nme": px / norm, "px_error": px,
        "pred": [json.dumps(p.round(2).tolist()) for p in pred],
        "true": [json.dumps(t.round(2).tolist()) for t in true],
    }).to_csv(path, index=False)


def save_model(folder: Path, layout: str, task: str, k: int, size: tuple[int, int] = (80, 60)) -> Path:
    """A real, tiny kpcore checkpoint (``nosenet``) written with kpcore's own API."""
    import torch

    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint

    torch.manual_seed(k)
    model = create_model("nosenet", num_keypoints=k, in_channels=1, input_size=size)
    config = build_config(model, task=task, layout=layout, flip_pairs=[], metrics={"val_nme": 0.05},
                          input_spec={"width": size[0], "height": size[1], "color": "gray",
                                      "mean": [0.5], "std": [0.25], "crop_mode": "whole", "enlarge": 1.0})
    return save_checkpoint(folder, model, config)


def make_run(root: Path, name: str, lr: float, kernel: int, seed: int, epochs: int = 8,
             task: str = "imm_nose", layout: str = "imm_nose", k: int = 1) -> Path:
    """A run folder: config.yaml, metrics.csv, val_predictions.csv, best/config.json."""
    import pandas as pd

    run = root / name
    run.mkdir(parents=True)
    config = {"task": task, "model": {"name": "cnn", "kwargs": {"kernel_size": kernel}},
              "optim": {"lr": lr, "weight_decay": 0.0}, "epochs": epochs, "batch_size": 16, "seed": seed}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    e = np.arange(1, epochs + 1)
    decay = np.exp(-e * lr * 400)
    pd.DataFrame({"epoch": e, "train_loss": 0.5 * decay + 0.01, "val_loss": 0.55 * decay + 0.02,
                  "val_nme": 0.2 * decay + 0.03 + kernel / 1000, "val_px_error": 12 * decay + 1,
                  "lr": lr, "seconds": 1.5}).to_csv(run / "metrics.csv", index=False)
    ids, pred, true = predictions(k, seed)
    write_per_image(run / "val_predictions.csv", ids, pred, true, norm=40.0)
    save_model(run / "best", layout, task, k)
    return run


def make_checkpoint(root: Path, name: str = "test-face58", thumbs: bool = True) -> Path:
    """A shipped-checkpoint folder with eval/val outputs (summary, per_image, ced, thumbs)."""
    import pandas as pd

    folder = save_model(root / name, "imm", "imm_face", 58)
    split = folder / "eval" / "val"
    split.mkdir(parents=True)
    ids, pred, true = predictions(58, seed=7)
    write_per_image(split / "per_image.csv", ids, pred, true, norm=40.0)
    px = np.linalg.norm(pred - true, axis=-1)
    (split / "summary.json").write_text(json.dumps({
        "n": len(ids), "mean_px_error": float(px.mean()), "nme": float(px.mean() / 40),
        "failure_rate": 0.1, "auc": 0.5, "per_keypoint_px": px.mean(axis=0).tolist()}))
    t = np.linspace(0, 0.08, 9)
    pd.DataFrame({"nme": t, "fraction": t / 0.08}).to_csv(split / "ced.csv", index=False)
    if thumbs:
        (split / "thumbs").mkdir()
        order = np.argsort(px.mean(axis=1))
        canvas = np.full((IMAGE_H, IMAGE_W, 3), 200, np.uint8)
        for rank, i in enumerate(order[::-1][:3]):
            img = draw_keypoints(canvas, pred[i], IMM_FACTS, true_points=true[i])
            Image.fromarray(img).save(split / "thumbs" / f"worst_{rank:02d}_{ids[i]}.jpg")
        for rank, i in enumerate(order[:3]):
            img = draw_keypoints(canvas, pred[i], IMM_FACTS, true_points=true[i])
            Image.fromarray(img).save(split / "thumbs" / f"best_{rank:02d}_{ids[i]}.jpg")
    return folder


def make_bench(path: Path) -> Path:
    rows = [
        {"model": "nose-imm", "task": "imm_nose", "split": "val", "n": 48, "nme": 0.041,
         "mean_px_error": 1.9, "latency_ms_b1": 0.8, "threads": 2, "throughput_b32": 4100.0,
         "params": 120_000, "file_mb": 0.5, "train_images_per_s": 900.0, "loader_images_per_s": 2500.0},
        {"model": "face58-imm", "task": "imm_face", "split": "val", "n": 48, "nme": 0.052,
         "mean_px_error": 2.6, "latency_ms_b1": 2.1, "threads": 2, "throughput_b32": 1300.0,
         "params": 1_400_000, "file_mb": 5.6, "train_images_per_s": 400.0, "loader_images_per_s": 2100.0},
        {"model": "face68-300w", "task": "ibug300w", "split": "test", "n": 600, "nme": 0.048,
         "mean_px_error": 3.9, "latency_ms_b1": 9.5, "threads": 2, "throughput_b32": 160.0,
         "params": 11_200_000, "file_mb": 22.4, "train_images_per_s": 60.0, "loader_images_per_s": 700.0},
        {"section": "mtfl", "model": "face68-300w", "split": "val", "n": 30, "nme": 0.04, "failure_rate": 0.1,
         "failure_rate_left_profile": 0.5, "n_left_profile": 2, "failure_rate_frontal": 0.0, "n_frontal": 28},
        {"section": "mtfl", "model": "dlib", "split": "val", "n": 30, "nme": 0.05, "failure_rate": 0.2,
         "failure_rate_left_profile": 1.0, "n_left_profile": 2, "failure_rate_frontal": 0.1, "n_frontal": 28},
        {"section": "speed", "model": "face68-300w", "backend": "onnxruntime", "ms_per_face": 2.0, "threads": 2,
         "default": False, "vs_dlib": 2.0},
        {"section": "speed", "model": "face68-300w", "backend": "onnxruntime int8", "ms_per_face": 1.2,
         "threads": 2, "default": True, "vs_dlib": 1.2},
        {"section": "speed", "model": "dlib", "backend": "dlib", "ms_per_face": 1.0, "threads": 1, "default": False,
         "vs_dlib": 1.0},
    ]
    path.write_text(json.dumps(rows))
    return path


def make_imm_tree(data_root: Path, stems: tuple[str, ...] = ("01-1m", "02-1m", "33-1m", "34-1m")) -> Path:
    """A tiny IMM folder (``<person>-<n><sex>.jpg`` + ``.asf``) in the format kpcore.data reads."""
    folder = data_root / "imm_face_db"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in stems:
        pts = ring(58) + rng.normal(0, 1.5, (58, 2))
        y, x = np.mgrid[0:IMAGE_H, 0:IMAGE_W]
        img = (np.stack([x * 1.5, y * 2, 255 - x], -1) % 256).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{stem}.jpg")
        lines = ["# synthetic", "58"]
        for i, (px, py) in enumerate(pts):
            lines.append(f"0 0 {px / IMAGE_W:.6f} {py / IMAGE_H:.6f} {i} {max(i - 1, 0)} {min(i + 1, 57)}")
        lines.append(f"{stem}.jpg")
        (folder / f"{stem}.asf").write_text("\n".join(lines) + "\n")
    return folder


REPO = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT = 120  # seconds; a cold start imports torch, streamlit and gradio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@contextlib.contextmanager
def serve_app(env_extra: dict[str, str], log_path: Path) -> Iterator[str]:
    """``streamlit run app.py`` on a free 127.0.0.1 port until the block ends; yields the base URL."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env_extra}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    if http_get(url + "/_stcore/health", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no health answer in {SERVER_START_TIMEOUT}s; log: "
                                       f"{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


POSES = ("frontal", "left profile", "right profile")


def make_rival_checkpoint(root: Path, name: str = "test-face58-rival", seed: int = 11, *,
                          confidence: bool = True, pose: bool = True, robustness: bool = True) -> Path:
    """A second IMM checkpoint evaluated on the same validation images as :func:`make_checkpoint`
    (same true points, other predictions), with the optional per_image columns
    ``confidence`` and ``pose`` and a ``robustness.csv``."""
    import pandas as pd

    folder = save_model(root / name, "imm", "imm_face", 58)
    split = folder / "eval" / "val"
    split.mkdir(parents=True)
    ids, _, true = predictions(58, seed=7)
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 8, len(ids))[:, None, None]
    pred = true + rng.normal(0, 1, true.shape) * scale
    write_per_image(split / "per_image.csv", ids, pred, true, norm=40.0)
    table = pd.read_csv(split / "per_image.csv")
    if confidence:  # less confident where the error is larger, with some noise
        table["confidence"] = np.clip(1 - table["nme"] * 3 + rng.normal(0, 0.02, len(table)), 0, 1)
    if pose:
        table["pose"] = [POSES[i % len(POSES)] for i in range(len(table))]
    table.to_csv(split / "per_image.csv", index=False)
    if robustness:
        write_robustness(split / "robustness.csv", base=float(table["nme"].mean()))
    return folder


def write_robustness(path: Path, base: float) -> Path:
    """A robustness.csv in the form kpcore.evaluation.robustness writes (two perturbations)."""
    import pandas as pd

    rows = []
    for name, strengths, unit in (("blur", (0, 1, 2, 4), "σ, % of face side"), ("rotate", (0, 15, 30), "degrees")):
        for i, s in enumerate(strengths):
            rows.append({"perturbation": name, "strength": s, "unit": unit, "nme": base * (1 + 0.5 * i),
                         "failure_rate": 0.05 * i, "auc": 0.5 - 0.05 * i, "n": N_VAL})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_reference(root: Path, name: str = "test-ref", split: str = "val", seed: int = 5) -> Path:
    """Saved results of a reference method (as ``records/dlib/eval/<split>/``): per_image.csv
    only, no checkpoint, no summary; the layout is inferred from the number of points."""
    folder = root / name / "eval" / split
    folder.mkdir(parents=True)
    ids, _, true = predictions(58, seed=7)
    rng = np.random.default_rng(seed)
    write_per_image(folder / "per_image.csv", ids, true + rng.normal(0, 2, true.shape), true, norm=40.0)
    return folder
