"""Tiny synthetic datasets in the official on-disk formats, written by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kpcore.data.facts import IMM_FACTS


def _mean_imm_shape() -> np.ndarray:
    """A plausible 58-point face in relative coordinates (jaw, eyes, brows, mouth, nose)."""
    pts = np.zeros((58, 2))
    t = np.linspace(-1, 1, 13)
    pts[0:13] = np.stack([0.5 + 0.13 * t, 0.62 + 0.2 * (1 - t**2) ** 0.5], 1)
    for start, cx in ((13, 0.56), (21, 0.44)):
        a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        pts[start:start + 8] = np.stack([cx + 0.03 * np.cos(a), 0.5 + 0.012 * np.sin(a)], 1)
    pts[29:34] = np.stack([np.linspace(0.52, 0.61, 5), np.full(5, 0.45)], 1)
    pts[34:39] = np.stack([np.linspace(0.48, 0.39, 5), np.full(5, 0.45)], 1)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    pts[39:47] = np.stack([0.5 - 0.05 * np.cos(a), 0.7 + 0.015 * np.sin(a)], 1)
    pts[47:58] = np.stack([np.linspace(0.47, 0.53, 11), 0.52 + 0.11 * np.sin(np.linspace(0, np.pi, 11))], 1)
    return pts


def make_tiny_imm(root: Path, persons: int = 40, views: int = 1, size: tuple[int, int] = (80, 60),
                  seed: int = 0) -> Path:
    """Write ``root/imm_face_db`` with ``persons x views`` images and .asf files.

    Each face is the mean shape shifted at random; the image is a dark canvas
    with a bright blob on every point, so the nose tip is learnable.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "imm_face_db"
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    base = _mean_imm_shape()
    yy, xx = np.mgrid[0:h, 0:w]
    for p in range(1, persons + 1):
        for v in range(1, views + 1):
            rel = base + rng.uniform(-0.08, 0.08, size=2)
            px = rel * (w, h)
            img = np.zeros((h, w), np.float32)
            for x, y in px[[13, 21, 52, 39, 43]]:
                img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
            rgb = (np.clip(img, 0, 1) * 220 + 20).astype(np.uint8)
            stem = f"{p:02d}-{v}m"
            Image.fromarray(np.stack([rgb] * 3, -1)).save(folder / f"{stem}.jpg", quality=95)
            lines = []
            groups = {i: g for g, ids in enumerate(IMM_FACTS.groups.values()) for i in ids}
            for i, (x, y) in enumerate(rel):
                lines.append(f"{groups[i]} \t0 \t{x:.8f} \t{y:.8f} \t{i} \t{max(i - 1, 0)} \t{min(i + 1, 57)}")
            (folder / f"{stem}.asf").write_text(
                "######\n# AAM Shape File\n######\n\n58\n\n" + "\n".join(lines) + f"\n\n# host image\n{stem}.jpg\n")
    return folder


def mean_68_shape() -> np.ndarray:
    """A plausible 68-point face (300-W order) in a unit square, subject facing the camera."""
    pts = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    pts[0:17] = np.stack([0.5 + 0.4 * np.cos(t), 0.45 + 0.45 * np.sin(t)], 1)  # jaw, image-left first
    pts[17:22] = np.stack([np.linspace(0.2, 0.42, 5), np.full(5, 0.3)], 1)
    pts[22:27] = np.stack([np.linspace(0.58, 0.8, 5), np.full(5, 0.3)], 1)
    pts[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.38, 0.55, 4)], 1)
    pts[31:36] = np.stack([np.linspace(0.42, 0.58, 5), np.full(5, 0.6)], 1)
    a = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    for start, cx in ((36, 0.32), (42, 0.68)):
        pts[start:start + 6] = np.stack([cx + 0.07 * np.cos(a), 0.4 + 0.025 * np.sin(a)], 1)
    a = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    pts[48:60] = np.stack([0.5 + 0.15 * np.cos(a), 0.75 + 0.05 * np.sin(a)], 1)
    a = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    pts[60:68] = np.stack([0.5 + 0.1 * np.cos(a), 0.75 + 0.02 * np.sin(a)], 1)
    return pts


def _blob_image(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.float32)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 6.0)
    g = (np.clip(img, 0, 1) * 200 + 30).astype(np.uint8)
    return np.stack([g] * 3, -1)


def make_tiny_300w(root: Path, n_train: int = 24, n_test: int = 6, size: tuple[int, int] = (96, 96),
                   seed: int = 0) -> Path:
    """Write ``root/ibug_300W_large_face_landmark_dataset`` with both XML files (no .pts)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "ibug_300W_large_face_landmark_dataset"
    (folder / "helen" / "testset").mkdir(parents=True, exist_ok=True)
    (folder / "afw").mkdir(parents=True, exist_ok=True)
    w, h = size
    for xml_name, sub, n in (("labels_ibug_300W_train.xml", "afw", n_train),
                             ("labels_ibug_300W_test.xml", "helen/testset", n_test)):
        entries = []
        for i in range(n):
            side = rng.uniform(0.45, 0.6) * w
            left, top = rng.uniform(0.1, 0.9 * w - side), rng.uniform(0.05, 0.9 * h - side)
            pts = mean_68_shape() * side + (left, top)
            name = f"{sub}/{i:03d}.jpg"
            Image.fromarray(_blob_image(pts, size)).save(folder / name, quality=95)
            parts = "".join(f"<part name='{k:02d}' x='{int(round(x))}' y='{int(round(y))}'/>"
                            for k, (x, y) in enumerate(pts))
            entries.append(f"<image file='{name}'><box top='{int(top)}' left='{int(left)}' "
                           f"width='{int(side)}' height='{int(side)}'>{parts}</box></image>")
        (folder / xml_name).write_text("<?xml version='1.0' encoding='ISO-8859-1'?><dataset><images>"
                                       + "".join(entries) + "</images></dataset>")
    return folder


def make_tiny_mtfl(root: Path, n: int = 40, size: tuple[int, int] = (96, 96), seed: int = 0) -> Path:
    """Write ``root/mtfl`` as released: ``training.txt`` with backslash paths (some lines
    starting with a space), 10 coordinates and 4 attribute codes; images in two folders."""
    from kpcore.data.facts import five_point_matrix

    rng = np.random.default_rng(seed)
    folder = Path(root) / "mtfl"
    for sub in ("lfw_5590", "net_7876"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    five = five_point_matrix("ibug300w")
    lines = []
    for i in range(n):
        side = rng.uniform(0.45, 0.6) * w
        left, top = rng.uniform(0.1, 0.9 * w - side), rng.uniform(0.05, 0.9 * h - side)
        pts68 = mean_68_shape() * side + (left, top)
        p5 = five @ pts68
        sub = "lfw_5590" if i % 2 else "net_7876"
        name = f"{sub}/face_{i:03d}.jpg"
        Image.fromarray(_blob_image(pts68, size)).save(folder / name, quality=95)
        coords = " ".join(f"{v:.6f}" for v in np.concatenate([p5[:, 0], p5[:, 1]]))
        pose = int(rng.integers(1, 6))
        lead = " " if i % 3 == 0 else ""
        lines.append(f"{lead}{name.replace('/', chr(92))} {coords} {1 + i % 2} 2 2 {pose}")
    (folder / "training.txt").write_text("\n".join(lines) + "\n")
    return folder
