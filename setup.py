"""Build step that puts the default models into the wheel (everything else is in pyproject.toml).

``checkpoints/`` stays the one source of truth: building a wheel copies from it
into ``kpcore/_models/`` (:data:`kpcore.paths.PACKAGED_MODELS_DIR`)

* the default 68-point model: its ``config.json``, int8 ONNX file and model card
  (which states the data terms). The float32 ``model.onnx`` (7.4 MB, 3.3x the int8
  file) stays out: ``auto`` runs the int8 file, whose recorded accuracy is within
  0.1 NME points of float32, and the weights (``model.safetensors``) are for PyTorch,
  which the light install has not;
* every face-detector folder (``checkpoints/face-detector*``): its ``config.json``,
  ``README.md`` and each model file the config names (its ``"file"``, or the
  ``"file"`` of each of its ``"variants"``), so a detector swapped in later ships without editing this file.

A source checkout and an editable install read ``checkpoints/`` directly; nothing
is copied there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
TARGET = Path("kpcore") / "_models"
CONFIG = "config.json"
CARD = "README.md"
DEFAULT_MODEL = "face68-300w"
DEFAULT_MODEL_FILES = (CONFIG, "model.int8.onnx", CARD)
DETECTOR_GLOB = "face-detector*"


def named_files(config: dict) -> list[str]:
    """The model files a detector's config names, as :mod:`kpcore.live.detect` reads them: its
    ``"file"``, or the ``"file"`` of each of its ``"variants"`` (``"source"`` is provenance only)."""
    own = [config["file"]] if isinstance(config.get("file"), str) else []
    variants = config.get("variants") if isinstance(config.get("variants"), dict) else {}
    return own + [v["file"] for v in variants.values() if isinstance(v, dict) and isinstance(v.get("file"), str)]


def packaged_files(checkpoints: Path = CHECKPOINTS) -> dict[str, list[Path]]:
    """``{folder name: [source files]}`` of what the wheel carries; a missing file is an error."""
    folders = {DEFAULT_MODEL: [checkpoints / DEFAULT_MODEL / n for n in DEFAULT_MODEL_FILES]}
    for folder in sorted(checkpoints.glob(DETECTOR_GLOB)):
        if not (folder / CONFIG).is_file():
            continue
        names = [CONFIG, CARD, *named_files(json.loads((folder / CONFIG).read_text()))]
        folders[folder.name] = [folder / n for n in dict.fromkeys(names) if n != CARD or (folder / n).is_file()]
    missing = [str(p) for files in folders.values() for p in files if not p.is_file()]
    if len(folders) < 2:
        missing.append(f"a {DETECTOR_GLOB} folder")
    if missing:
        raise FileNotFoundError(f"the wheel must carry the default model and a face detector, but {missing} "
                                f"is missing under {checkpoints}; build from a full checkout (or an sdist made "
                                f"from one)")
    return folders


class BuildPyWithModels(build_py):
    """``build_py`` plus the copy of the packaged models into the build tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads checkpoints/ itself
            return
        shutil.rmtree(Path(self.build_lib) / TARGET, ignore_errors=True)  # no model left from an earlier build
        for name, files in packaged_files().items():
            dest = Path(self.build_lib) / TARGET / name
            dest.mkdir(parents=True, exist_ok=True)
            for src in files:
                shutil.copyfile(src, dest / src.name)


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it for packaged_files()
    setup(cmdclass={"build_py": BuildPyWithModels})
