"""``python -m kpcore export RUN``: ship a run's records, and optionally its best model.

* records (no weights) -> ``records/<run>/``: ``config.yaml``, ``metrics.csv``,
  ``val_predictions.csv``, ``train.log``; the dashboard reads them, so a fresh
  clone shows how the shipped models were trained and compared;
* ``--to checkpoints/NAME`` -> the best checkpoint (``--half`` stores float
  weights as float16 to keep git small), with its model card and a pointer to
  its records. Run ``kpcore evaluate`` on it afterwards to add ``eval/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import CheckpointError
from ..paths import RECORDS_DIR, REPO_ROOT
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint

RECORDS_ROOT = RECORDS_DIR
RECORD_FILES = ("config.yaml", "metrics.csv", "val_predictions.csv", "train.log")


def export_records(run_dir: str | Path, records_root: str | Path = RECORDS_ROOT) -> Path:
    """Copy a run's small record files to ``records_root/<run name>/``."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no metrics.csv); train one with "
                              f"`python -m kpcore train JOB.yaml --out {run_dir}`")
    dest = Path(records_root) / run_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
    return dest


def export_checkpoint(run_dir: str | Path, dest: str | Path, half: bool = False,
                      records: Path | None = None) -> Path:
    """Copy ``run_dir/best`` to ``dest`` (optionally float16) with a generated model card."""
    from .hub import model_card, read_eval_summaries

    best = Path(run_dir) / "best"
    if not (best / CONFIG_FILE).exists() or not (best / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{best} has no {CONFIG_FILE} + {WEIGHTS_FILE}; the run has not finished an epoch")
    model, config = load_checkpoint(best)
    if records is not None:
        config["records"] = str(records.relative_to(REPO_ROOT)) if records.is_relative_to(REPO_ROOT) \
            else str(records)
    config.pop("weights_dtype", None)
    dest = Path(dest)
    evals = read_eval_summaries(dest) if dest.exists() else {}
    keep_eval = dest / "eval"
    tmp_eval = None
    if keep_eval.exists():  # earlier evaluation results survive a re-export
        tmp_eval = dest.with_name(f".{dest.name}.eval-keep")
        shutil.rmtree(tmp_eval, ignore_errors=True)
        shutil.copytree(keep_eval, tmp_eval)
    save_checkpoint(dest, model, config, half=half,
                    extra_files={"README.md": model_card(config, evals, repo_id=None)})
    if tmp_eval is not None:
        shutil.move(tmp_eval, keep_eval)
    return dest


def refresh_model_card(folder: str | Path) -> Path:
    """Rewrite ``README.md`` of a checkpoint from its config and ``eval/*/summary.json``."""
    from .checkpoint import read_config
    from .hub import model_card, read_eval_summaries

    folder = Path(folder)
    (folder / "README.md").write_text(model_card(read_config(folder), read_eval_summaries(folder)))
    return folder / "README.md"
