"""Hostile and unusual input in the API (``Predictor``), the CLI and the served UI.

The files come from tests/hostile_images.py: broken ones (not an image, empty,
truncated, 1x1, decompression bomb, HEIC, SVG) must give a ``ValueError``
subclass whose message says what is wrong and what to do, the same text
through ``gradio_client`` (``AppError``) and one ``error: ...`` line with exit
code 2 from ``python -m kpcore predict``; odd but valid encodings of a face
photo (grayscale, 16-bit, CMYK, RGBA, palette, animated GIF, 6000x4000) must
find the same face. A photo without a face says so, and the UI offers to use
the whole image. The served tests (``slow``) start ``streamlit run app.py`` on a
free 127.0.0.1 port with a tiny untrained 68-point checkpoint and the real face
detector; the last one sends 20 concurrent requests with
scripts/load_test_live.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpcore.cli import main as cli_main
from kpcore.data.imageio import DEFAULT_MAX_SIDE
from kpcore.errors import BadImageError, NoFaceFoundError
from tests.hostile_images import HUGE_SIZE, bad_files, landscape, odd_encodings
from tests.webapp_fixtures import http_get, make_bench, save_model, serve_app

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KPCORE_DATA", REPO.parent / "shared" / "data"))
MODEL = "face68-300w"
NUM_POINTS = 68
SAME_FACE_IOU = 0.8
"""Boxes found on two encodings of one photo overlap at least this much."""
CONCURRENT_REQUESTS = 20
BAD = {b.name: b for b in bad_files()}
ODD_NAMES = ["gray.jpg", "gray16.png", "rgb48.png", "cmyk.jpg", "rgba.png", "palette.png", "animated.gif",
             "huge.jpg"]


def face_photos() -> list[Path]:
    """Face photos from the data root: IMM 01-1m first, then the HELEN test images of 300-W."""
    imm = DATA / "imm_face_db" / "01-1m.jpg"
    helen = sorted((DATA / "ibug_300W_subset" / "helen" / "testset").glob("*.jpg"))
    return [p for p in [imm, *helen] if p.is_file()]


def iou(a, b) -> float:
    """Intersection over union of two (left, top, width, height) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def scaled(box, sx: float, sy: float) -> tuple[float, float, float, float]:
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def photo() -> Path:
    photos = face_photos()
    if not photos:
        pytest.skip(f"no face photo under {DATA} (imm_face_db/01-1m.jpg or ibug_300W_subset/helen/"
                    "testset/*.jpg); set KPCORE_DATA")
    return photos[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder holding a tiny untrained ``face68-300w``."""
    root = tmp_path_factory.mktemp("checkpoints")
    save_model(root / MODEL, "ibug300w", "ibug300w", NUM_POINTS)
    return root


@pytest.fixture(scope="module")
def predictor(checkpoints: Path):
    from kpcore import Predictor

    return Predictor.from_pretrained(checkpoints / MODEL)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, photo: Path) -> Path:
    """Every bad file, every odd encoding of ``photo`` and a landscape, under their names."""
    folder = tmp_path_factory.mktemp("hostile")
    for bad in BAD.values():
        (folder / bad.name).write_bytes(bad.data)
    for name, data in odd_encodings(Image.open(photo)).items():
        (folder / name).write_bytes(data)
    landscape().save(folder / "landscape.png")
    return folder


@pytest.fixture(scope="module")
def reference_box(photo: Path) -> tuple[float, ...]:
    """The face box in the plain photo (the detector alone)."""
    from kpcore.data.imageio import load_image
    from kpcore.live.detect import get_detector

    faces = get_detector().detect(load_image(photo))
    assert len(faces) == 1, f"{photo} should show one face"
    return faces[0].box


# ------------------------------------------------------------------- the API
@pytest.mark.parametrize("name", list(BAD))
def test_api_bad_file_raises_a_value_error_saying_what_to_do(predictor, files: Path, name: str) -> None:
    bad = BAD[name]
    with pytest.raises(BadImageError, match=bad.match) as error:
        predictor.predict(files / name)
    assert isinstance(error.value, ValueError)
    assert repr(str(files / name)) in str(error.value)  # the message names the file
    with pytest.raises(BadImageError, match=bad.match):
        predictor.predict(bad.data)  # bytes, as a web server would pass them


@pytest.mark.parametrize("name", ODD_NAMES)
def test_api_odd_encoding_finds_the_face(predictor, files: Path, reference_box, name: str) -> None:
    faces = predictor.predict(files / name)
    assert len(faces) == 1 and faces[0].score > 0.5
    points = faces[0].points
    assert points.shape == (NUM_POINTS, 2) and np.isfinite(points).all()
    if name == "huge.jpg":  # downscaled while loading, still found (see the xfail below for its pixels)
        width, height = Image.open(files / name).size
        assert (width, height) == HUGE_SIZE
        return
    assert iou(faces[0].box, reference_box) > SAME_FACE_IOU, faces[0].box


def test_api_huge_photo_points_are_in_the_photo_pixels(predictor, files: Path, photo: Path,
                                                       reference_box) -> None:
    face = predictor.predict(files / "huge.jpg")[0]
    width, height = Image.open(photo).size
    expected = scaled(reference_box, HUGE_SIZE[0] / width, HUGE_SIZE[1] / height)
    assert iou(face.box, expected) > SAME_FACE_IOU, (face.box, expected, DEFAULT_MAX_SIDE)


def test_api_no_face_raises_and_the_whole_image_is_an_option(predictor, files: Path) -> None:
    with pytest.raises(NoFaceFoundError, match="no face found.*whole_image_if_no_face=True") as error:
        predictor.predict(files / "landscape.png")
    assert isinstance(error.value, ValueError)
    faces = predictor.predict(files / "landscape.png", whole_image_if_no_face=True)
    width, height = Image.open(files / "landscape.png").size
    assert len(faces) == 1 and faces[0].box == (0.0, 0.0, width, height) and faces[0].score == 0.0
    assert faces[0].points.shape == (NUM_POINTS, 2)


# ------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("name", list(BAD))
def test_cli_bad_file_exits_2_with_one_error_line(checkpoints: Path, files: Path, name: str, capsys) -> None:
    code = cli_main(["predict", str(checkpoints / MODEL), str(files / name)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(BAD[name].match, lines[0]), lines[0]


def test_cli_no_face_exits_2_with_one_error_line(checkpoints: Path, files: Path, capsys) -> None:
    code = cli_main(["predict", str(checkpoints / MODEL), str(files / "landscape.png")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: no face found") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["notes.jpg", "landscape.png"])
def test_cli_process_prints_no_traceback(checkpoints: Path, files: Path, name: str) -> None:
    """The real ``python -m kpcore``: exit code 2, one line on stderr, nothing else."""
    result = subprocess.run([sys.executable, "-m", "kpcore", "predict", str(checkpoints / MODEL),
                             str(files / name)], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr


# ----------------------------------------- the UI's event, called directly
@pytest.fixture
def live(checkpoints: Path, files: Path, monkeypatch: pytest.MonkeyPatch):
    from webapp import live

    monkeypatch.setenv(live.CHECKPOINTS_ENV, str(checkpoints))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(files))  # the demo reads uploads only: these count as uploads
    return live


def _upload(path: Path, orig_name: str) -> dict:
    """What the ``predict`` event receives for an upload (Gradio's FileData, unprocessed)."""
    return {"path": str(path), "orig_name": orig_name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("name", ["notes.jpg", "bomb.png", "photo.heic"])
def test_run_demo_reads_the_upload_with_kpcore(live, files: Path, name: str) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match=BAD[name].match) as error:
        live.run_demo(_upload(files / name, "holiday.jpg"))
    assert "'holiday.jpg'" in str(error.value) and str(files) not in str(error.value)


def test_run_demo_huge_photo_points_in_photo_pixels(live, files: Path, photo: Path, reference_box) -> None:
    drawn, json_path, csv_path, summary = live.run_demo(_upload(files / "huge.jpg", "huge.jpg"))
    assert max(drawn.shape[:2]) == DEFAULT_MAX_SIDE  # shown shrunk
    answer = json.loads(Path(json_path).read_text())
    assert answer["image_size"] == list(HUGE_SIZE)
    width, height = Image.open(photo).size
    expected = scaled(reference_box, HUGE_SIZE[0] / width, HUGE_SIZE[1] / height)
    assert iou(answer["faces"][0]["box"], expected) > SAME_FACE_IOU
    x, y = np.asarray(answer["faces"][0]["points"]).max(axis=0)
    assert x > DEFAULT_MAX_SIDE or y > DEFAULT_MAX_SIDE  # the tiny model puts them mid-image
    assert f"shown at {drawn.shape[1]}x{drawn.shape[0]}" in summary


def test_run_demo_no_face_offers_the_whole_image(live, files: Path) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match=f"(?i)no face found.*tick \"{live.WHOLE_IMAGE_LABEL}\"") as error:
        live.run_demo(str(files / "landscape.png"))
    assert "whole_image_if_no_face" not in error.value.message  # no argument a UI user cannot pass
    drawn, json_path, _, summary = live.run_demo(str(files / "landscape.png"), whole_image_if_no_face=True)
    (face,) = json.loads(Path(json_path).read_text())["faces"]
    assert face["score"] == live.WHOLE_IMAGE_SCORE and len(face["points"]) == NUM_POINTS
    assert summary.startswith("No face found:")


# ------------------------------------------------------- served: the UI
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, checkpoints: Path) -> Iterator[str]:
    """``streamlit run app.py`` (dashboard at /, Gradio at /gradio/) on a free port; yields the base URL."""
    tmp = tmp_path_factory.mktemp("served")
    (tmp / "runs").mkdir()
    env = {"KPCORE_RUNS": str(tmp / "runs"), "KPCORE_CHECKPOINTS": str(checkpoints),
           "KPCORE_BENCH": str(make_bench(tmp / "bench.json")), "KPCORE_DATA": str(tmp / "nodata")}
    with serve_app(env, tmp / "server.log") as url:
        SERVER_LOGS[url] = tmp / "server.log"
        yield url


SERVER_LOGS: dict[str, Path] = {}
"""The served app's log file, by base URL (read by the no-traceback test)."""


@pytest.fixture(scope="module")
def client(served: str, tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    c = Client(served + "/gradio/", verbose=False, download_files=str(tmp_path_factory.mktemp("answers")))
    yield c
    c.close()


def _predict(client, path: Path, **kwargs) -> tuple[dict, str]:
    """The JSON answer and the summary of the live demo's ``/predict`` for one file."""
    from gradio_client import handle_file

    _, json_path, _, summary = client.predict(handle_file(str(path)), api_name="/predict", **kwargs)
    return json.loads(Path(json_path).read_text()), summary


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD))
def test_ui_bad_file_gives_kpcore_message(client, files: Path, name: str) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=BAD[name].match) as error:
        _predict(client, files / name)
    assert f"'{name}'" in str(error.value)  # named as uploaded, not by the server's temp path


@pytest.mark.slow
def test_ui_keeps_serving_after_the_bad_files(served: str, client, photo: Path) -> None:
    answer, summary = _predict(client, photo)  # the defaults of every input after the photo
    assert f"1 face(s) · {NUM_POINTS} points" in summary
    assert answer["image_size"] == list(Image.open(photo).size)
    assert http_get(served + "/_stcore/health") == (200, b"ok")


@pytest.mark.slow
@pytest.mark.parametrize("name", ODD_NAMES)
def test_ui_odd_encoding_gives_points(client, files: Path, photo: Path, reference_box, name: str) -> None:
    answer, summary = _predict(client, files / name)
    size = Image.open(files / name).size
    assert answer["image_size"] == list(size)
    (face,) = answer["faces"]
    points = np.asarray(face["points"])
    assert points.shape == (NUM_POINTS, 2)
    assert (points >= -0.5).all() and (points <= np.array(size) - 0.5).all()
    width, height = Image.open(photo).size
    expected = scaled(reference_box, size[0] / width, size[1] / height)
    assert iou(face["box"], expected) > SAME_FACE_IOU, (face["box"], expected)
    if max(size) > DEFAULT_MAX_SIDE:  # shrunk for the detector and the picture, points in photo pixels
        assert "photo's pixels" in summary and f"{size[0]}x{size[1]}" in summary


@pytest.mark.slow
def test_ui_no_face_says_so_and_offers_the_whole_image(client, files: Path) -> None:
    from gradio_client.exceptions import AppError

    from webapp.live import WHOLE_IMAGE_LABEL

    with pytest.raises(AppError, match=f"(?i)no face found.*{WHOLE_IMAGE_LABEL}"):
        _predict(client, files / "landscape.png")
    answer, summary = _predict(client, files / "landscape.png", whole_image_if_no_face=True)
    width, height = Image.open(files / "landscape.png").size
    (face,) = answer["faces"]
    assert face["box"] == [0.0, 0.0, width, height] and len(face["points"]) == NUM_POINTS
    assert summary.startswith(f"No face found: {NUM_POINTS} points placed on the whole photo")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD))
def test_ui_morph_and_mean_face_read_photos_with_kpcore(client, files: Path, photo: Path, name: str) -> None:
    """The Face morph tab's two endpoints: kpcore's message, named as uploaded, no framework internals."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=f"Photo B: .*{BAD[name].match}") as error:
        client.predict(handle_file(str(photo)), handle_file(str(files / name)), 3, True, api_name="/morph")
    text = str(error.value)
    assert f"'{name}'" in text and "preprocess" not in text and "/gradio/" not in text
    with pytest.raises(AppError, match=f"Only 0 of 2 photos have a usable face.*{BAD[name].match}") as error:
        client.predict([handle_file(str(files / name)), handle_file(str(files / "landscape.png"))],
                       api_name="/mean_face")
    text = str(error.value)
    assert "landscape.png" in text and "/tmp" not in text and "ImageData" not in text


@pytest.mark.slow
def test_user_mistakes_leave_no_traceback_in_the_server_log(served: str, client, files: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    for name in ("notes.jpg", "empty.jpg"):
        with pytest.raises(AppError):
            client.predict(handle_file(str(files / name)), api_name="/predict")
    log = SERVER_LOGS[served].read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


# ------------------------------------------------------- served: concurrency
@pytest.mark.slow
def test_concurrent_requests_are_all_answered(served: str, photo: Path, tmp_path: Path) -> None:
    from scripts.load_test_live import run_load_test

    photos = face_photos()[:3]
    report = run_load_test(served + "/gradio/", photos, n=CONCURRENT_REQUESTS, workdir=tmp_path)
    print("\n".join(report.lines()))  # the figures, with -s
    assert report.answered == CONCURRENT_REQUESTS, report.lines()
    assert not report.wrong, report.lines()
    assert report.expected_errors == CONCURRENT_REQUESTS // 5  # every 5th request is a bad file
    valid = [o for o in report.outcomes if o.upload.expect_error is None]
    assert all(o.points == NUM_POINTS for o in valid)
    assert http_get(served + "/_stcore/health") == (200, b"ok")
