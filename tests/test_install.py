"""The light install: a wheel with the default model inside, a core without PyTorch, extras that say so.

The slow test builds the wheel, installs it into a fresh virtual environment (the
dependencies come from the package registry pip is set up with), and runs
``kpcore predict`` on a photo in a folder outside the repository with the Hub
offline: the packaged int8 model and face detector must be all it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from .conftest import REPO

CORE_VENV_MAX_MB = 600
"""The issue's bar for the installed size of the core install (aim: 300 MB)."""
PHOTO = REPO / "webapp" / "examples" / "astronaut.jpg"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def test_requirements_txt_lists_the_core_and_every_extra():
    """requirements.txt (the app, the Space, CI) installs what ``kpcore[all]`` does, same versions."""
    project = _pyproject()
    extras = project["optional-dependencies"]
    assert set(extras) == {"train", "app", "ray", "all"}
    assert extras["all"] == ["kpcore[train,app,ray]"]
    wanted = _requirements(project["dependencies"])
    for name in ("train", "app", "ray"):
        for key, req in _requirements(extras[name]).items():
            assert str(wanted.setdefault(key, req)) == str(req), f"{key} differs between extras"
    listed = _requirements((REPO / "requirements.txt").read_text().splitlines())
    assert {k: str(v) for k, v in listed.items()} == {k: str(v) for k, v in wanted.items()}
    assert "dynamic" not in project  # static metadata: pip can read the extras without running anything


def test_the_core_leaves_the_heavy_packages_to_the_extras():
    core = set(_requirements(_pyproject()["dependencies"]))
    assert core == {"numpy", "pillow", "opencv-python-headless", "onnxruntime", "huggingface-hub", "tqdm", "pyarrow"}
    dev = (REPO / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev  # and so ray[data], for the Ray engine's tests


def test_the_build_packages_the_default_model_and_every_file_a_detector_config_names(tmp_path):
    """setup.py's copy list, read from checkpoints/ (the one source of truth)."""
    sys.path.insert(0, str(REPO))
    try:
        import setup as build
    finally:
        sys.path.remove(str(REPO))
    files = build.packaged_files()
    assert [p.name for p in files["face68-300w"]] == ["config.json", "model.int8.onnx", "README.md"]
    detectors = [name for name in files if name.startswith("face-detector")]
    assert "face-detector" in detectors
    for name in detectors:
        config = json.loads((REPO / "checkpoints" / name / "config.json").read_text())
        assert set(build.named_files(config)) <= {p.name for p in files[name]}
        assert any(p.suffix == ".onnx" for p in files[name])
    # a detector swapped in later is found by its config's file names, not by a list in setup.py
    fake = tmp_path / "checkpoints"
    shutil.copytree(REPO / "checkpoints" / "face68-300w", fake / "face68-300w",
                    ignore=shutil.ignore_patterns("eval", "*.safetensors", "model.onnx"))
    (fake / "face-detector").mkdir()
    (fake / "face-detector" / "config.json").write_text(json.dumps({"variants": {"a": {"file": "a.onnx"}}}))
    with pytest.raises(FileNotFoundError, match="a.onnx"):
        build.packaged_files(fake)
    (fake / "face-detector" / "a.onnx").write_bytes(b"x")
    assert [p.name for p in build.packaged_files(fake)["face-detector"]] == ["config.json", "a.onnx"]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_in_a_fresh_venv_without_torch_predicts_offline(tmp_path):
    """Build the wheel, install it alone (with its core dependencies), predict on a photo outside the
    repository with the Hub offline. About a minute with pip's cache warm."""
    wheels, env_dir, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "photos"
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO], cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("kpcore-*.whl")
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KPCORE_CHECKPOINTS", "KPCORE_FACE_DETECTOR", "KPCORE_BACKEND")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", KPCORE_PROGRESS="0")
    install = _run([py, "-m", "pip", "install", "-q", wheel], env=env, cwd=tmp_path, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    size_mb = _du_mb(env_dir)
    print(f"\ncore venv: {size_mb:.0f} MB; wheel: {wheel.stat().st_size / 2**20:.1f} MB")

    work.mkdir()
    shutil.copy(PHOTO, work / "photo.jpg")
    no_torch = _run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'timm', "
                     "'streamlit', 'gradio', 'ray') if u.find_spec(m)])"], env=env, cwd=work)
    assert no_torch.stdout.strip() == "[]", no_torch.stdout + no_torch.stderr

    kpcore = env_dir / "bin" / "kpcore"
    out = _run([kpcore, "predict", "photo.jpg", "--json", "faces.json"], env=env, cwd=work, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    doc = json.loads((work / "faces.json").read_text())
    assert doc["model"] == "face68-300w" and doc["faces"], doc
    points = doc["faces"][0]["points"]
    assert len(points) == 68 and all(0 <= x < 512 and 0 <= y < 512 for x, y in points)  # a 512x512 photo

    folder = work / "folder"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(PHOTO, folder / "nested" / "a.jpg")
    (folder / "notes.jpg").write_text("not a photo")
    table = _run([kpcore, "predict", "folder", "--out", "faces.parquet", "--workers", "1"], env=env, cwd=work,
                 timeout=300)
    assert table.returncode == 0, table.stdout + table.stderr[-3000:]
    rows = _run([py, "-c", "import pyarrow.parquet as pq; t = pq.read_table('faces.parquet'); "
                 "print(sorted(t.column('status').to_pylist()), t.num_columns)"], env=env, cwd=work, timeout=120)
    assert rows.stdout.split("]")[0] + "]" == "['ok', 'unreadable']", rows.stdout + rows.stderr[-2000:]

    aligned = _run([kpcore, "align", "folder", "--out", "aligned", "--size", "128"], env=env, cwd=work, timeout=300)
    assert aligned.returncode == 0, aligned.stdout + aligned.stderr[-3000:]
    crops = _run([py, "-c", "import pyarrow.parquet as pq; from PIL import Image; "
                  "t = pq.read_table('aligned/index.parquet').to_pylist(); "
                  "print(len(t), [Image.open('aligned/' + r['file']).size for r in t])"], env=env, cwd=work, timeout=120)
    assert crops.stdout.strip() == "1 [(128, 128)]", crops.stdout + crops.stderr[-2000:]

    api = _run([py, "-c", "import sys; from kpcore import Predictor; p = Predictor(); f = p.predict('photo.jpg'); "
                "print(p.backend_name, p.folder, len(f), f[0].points.shape); "
                "sys.exit(bool({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy', 'pandas'}))"],
               env=env, cwd=work, timeout=300)
    assert api.returncode == 0, api.stdout + api.stderr[-3000:]
    words = api.stdout.split()  # backend (2 words), folder, faces, shape
    assert words[:2] == ["onnxruntime", "int8"], api.stdout
    assert words[2].endswith("site-packages/kpcore/_models/face68-300w") and api.stdout.strip().endswith("(68, 2)")

    train = _run([kpcore, "train", "job.yaml"], env=env, cwd=work, timeout=120)
    assert train.returncode == 2 and "pip install 'kpcore[train]'" in train.stderr, train.stderr[-2000:]
    assert size_mb <= CORE_VENV_MAX_MB, f"the core venv takes {size_mb:.0f} MB"
