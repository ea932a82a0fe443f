"""The repository folders kpcore reads and writes beside the package.

``checkpoints/`` (shipped models and the face detector), ``train_jobs/``,
``records/``, ``runs/`` and ``benchmarks/`` sit next to ``kpcore/`` in a source
checkout (or an editable install). Computed here once, so that a module moving
within the package never changes where it looks.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
TRAIN_JOBS_DIR = REPO_ROOT / "train_jobs"
RECORDS_DIR = REPO_ROOT / "records"
RUNS_DIR = REPO_ROOT / "runs"
BENCH_FILE = REPO_ROOT / "benchmarks" / "bench.json"
