"""Tiny synthetic datasets in the official on-disk formats, written by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kpcore.facts import IMM_FACTS


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
