"""Shared test set-up: offline Hub, data root, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KPCORE_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("KPCORE_DATA", REPO.parent / "shared" / "data"))
# ImageNet weights for torchvision's MobileNetV2 lie in ../shared/torch/hub/checkpoints/ on the
# development and CI machines; torchvision's weights API reads them from $TORCH_HOME offline.
os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "torch"))


def has_dataset(folder: str) -> bool:
    return (DATA_ROOT / folder).is_dir()


needs_imm = pytest.mark.skipif(not has_dataset("imm_face_db"),
                               reason=f"IMM not found under {DATA_ROOT}; set KPCORE_DATA")
needs_300w = pytest.mark.skipif(
    not (has_dataset("ibug_300W_subset") or has_dataset("ibug_300W_large_face_landmark_dataset")),
    reason=f"300-W not found under {DATA_ROOT}; set KPCORE_DATA")


@pytest.fixture
def data_root() -> Path:
    return DATA_ROOT
