"""Gradio live demo: a photo or the webcam in, keypoints out (image, JSON, CSV).

``build_demo()`` builds the Blocks; nothing is loaded until the first request.
``app.py`` mounts it at ``/gradio`` next to the Streamlit dashboard. Alone:
``python -m webapp.live`` serves it on http://127.0.0.1:7861.

API: the main event is ``api_name="predict"`` with the photo first, so::

    from gradio_client import Client, handle_file
    Client("http://host:port/gradio/").predict(handle_file("face.jpg"), api_name="/predict")

returns ``(annotated image, JSON file, CSV file, summary markdown)``. The inputs
after the photo (model, skeleton, point ids, "use the whole image if no face is
found") all have defaults. The event skips Gradio's own image decoding
(``preprocess=False``): kpcore's :func:`~kpcore.imageio.load_image` reads the
uploaded file, so a broken, hostile or unsupported file gets kpcore's message
(a ``gr.Error``, raised by ``gradio_client`` as ``AppError``), odd encodings
(16-bit, CMYK, transparency, animation, EXIF rotation) are read the kpcore way,
and huge photos are shrunk, with points still given in the photo's own pixels.

The "Face morph" tab (:func:`_morph_tab`, computing in ``kpcore.morph``) has
``api_name="morph"`` (photo A, photo B, frames, loop back -> half-way face, GIF
shown, GIF file, MP4 file or None, summary) and ``api_name="mean_face"`` (a list
of photo files -> mean face, summary); both use the ``face68-300w`` checkpoint.

Checkpoints are looked up by folder name (:data:`MODELS`) in ``$KPCORE_CHECKPOINTS``
(``os.pathsep``-separated folders) and then in ``<repo>/checkpoints``. The one
call into kpcore is :func:`predict_faces` (tests replace it).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from kpcore.checkpoint import read_config
from kpcore.errors import NoFaceFoundError
from kpcore.facts import FACTS, DatasetFacts
from kpcore.imageio import load_image_with_info
from kpcore.render import draw_boxes, draw_keypoints
from webapp.live_video import add_video_tabs

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
CHECKPOINTS_ENV = "KPCORE_CHECKPOINTS"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# Dropdown label -> checkpoint folder name.
MODELS: dict[str, str] = {
    "Face, 68 points (300-W)": "face68-300w",
    "Face, 58 points (IMM)": "face58-imm",
    "Nose tip, 1 point (IMM)": "nose-imm",
}
DEFAULT_MODEL = next(iter(MODELS))
WHOLE_IMAGE_LABEL = "If no face is found, use the whole image"
WHOLE_IMAGE_SCORE = 0.0
"""The score kpcore gives the whole-image "face" of ``predict(..., whole_image_if_no_face=True)``."""


@dataclass
class Face:
    """One detected face, as the demo uses it."""

    points: np.ndarray  # (K, 2) original-image pixels
    box: list[float] | None  # (left, top, width, height)
    score: float | None


# ---------------------------------------------------------------- kpcore calls
def checkpoint_roots() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    return [*extra, REPO_ROOT / "checkpoints"]


def checkpoint_folder(name: str) -> Path | None:
    """The first ``<root>/<name>/`` holding a ``config.json``, or None."""
    for root in checkpoint_roots():
        if (root / name / "config.json").is_file():
            return root / name
    return None


@functools.lru_cache(maxsize=len(MODELS))
def _predictor(folder: str):
    from kpcore import Predictor

    return Predictor.from_pretrained(folder)


def predict_faces(folder: Path, image: np.ndarray, whole_image_if_no_face: bool = False) -> list[Any]:
    """Detect the faces in an RGB ``uint8`` photo and predict their points with the checkpoint in ``folder``.

    Returns ``kpcore.predict.FacePrediction`` objects (``box``, ``score``, ``points``);
    with ``whole_image_if_no_face`` a photo without a detected face gives one
    "face" covering the whole image, with score :data:`WHOLE_IMAGE_SCORE`.
    Raises kpcore's ``ValueError`` subclasses for unusable photos (too small, no face).
    """
    return _predictor(str(folder)).predict(image, whole_image_if_no_face=whole_image_if_no_face)


def load_photo(photo: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo as an RGB ``uint8`` array (shrunk when huge) and its ``(width, height)`` as uploaded.

    ``photo`` is what the ``predict`` event receives: Gradio's upload payload
    (a dict with ``path`` and ``orig_name``), or an object with ``.path``, or a
    path; an array is taken as it is (Python callers, tests). Files are read by
    kpcore's loader; its ``BadImageError`` becomes a ``gr.Error`` naming the file
    as the user called it (never the server's temp path).
    """
    if isinstance(photo, np.ndarray):
        return photo, (photo.shape[1], photo.shape[0])
    if isinstance(photo, dict):
        path, name = photo.get("path"), photo.get("orig_name")
    elif isinstance(photo, (str, os.PathLike)):
        path, name = photo, None
    else:
        path, name = getattr(photo, "path", None), getattr(photo, "orig_name", None)
    if not path:
        raise gr.Error("The photo did not arrive (no file in the request); upload it again.")
    data = io.BytesIO(Path(path).read_bytes())
    data.name = str(name or Path(path).name)  # the label in kpcore's messages
    try:
        image, info = load_image_with_info(data)
    except ValueError as e:  # kpcore's BadImageError: what is wrong and what to do
        raise gr.Error(str(e), print_exception=False) from e  # the user's file, not a server fault
    return image, info.size


def to_photo_pixels(face: Face, shown: tuple[int, int], photo: tuple[int, int]) -> Face:
    """A face found on the shown (shrunk) image, in the pixels of the photo as uploaded.

    Edges scale by ``photo / shown`` exactly; points are pixel centres, so
    ``x -> (x + 0.5) * sx - 0.5``.
    """
    if shown == photo:
        return face
    sx, sy = photo[0] / shown[0], photo[1] / shown[1]
    points = (face.points + 0.5) * [sx, sy] - 0.5
    box = None if face.box is None else [face.box[0] * sx, face.box[1] * sy, face.box[2] * sx, face.box[3] * sy]
    return Face(points, box, face.score)


def as_face(face: Any) -> Face:
    """kpcore's face (attributes or dict) in the demo's form."""
    def get(name: str) -> Any:
        return face.get(name) if isinstance(face, dict) else getattr(face, name, None)

    points = np.asarray(get("points"), dtype=np.float64).reshape(-1, 2)
    box = get("box")
    score = get("score")
    return Face(points, None if box is None else [float(v) for v in box],
                None if score is None else float(score))


# ------------------------------------------------------------------- outputs
def faces_json(faces: list[Face], model: str, layout: str | None, size: tuple[int, int]) -> dict:
    return {
        "model": model,
        "layout": layout,
        "image_size": list(size),
        "convention": "(x, y) pixels, 0-based, pixel centres",
        "faces": [{"box": f.box, "score": f.score, "points": f.points.round(2).tolist()} for f in faces],
    }


def write_outputs(faces: list[Face], model: str, layout: DatasetFacts | None,
                  size: tuple[int, int]) -> tuple[str, str]:
    """Write ``keypoints.json`` and ``keypoints.csv`` to a fresh temp folder; return their paths."""
    folder = Path(tempfile.gettempdir()) / "kpcore_live" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    json_path, csv_path = folder / "keypoints.json", folder / "keypoints.csv"
    json_path.write_text(json.dumps(faces_json(faces, model, layout.name if layout else None, size), indent=1))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["face", "point", "group", "x", "y"])
        for i, face in enumerate(faces):
            for j, (x, y) in enumerate(face.points):
                group = layout.group_of[j] if layout is not None and j < layout.num_points else ""
                writer.writerow([i, j, group, f"{x:.2f}", f"{y:.2f}"])
    return str(json_path), str(csv_path)


def availability() -> str:
    """Markdown line saying which models have a checkpoint here."""
    have = [label for label, name in MODELS.items() if checkpoint_folder(name)]
    if len(have) == len(MODELS):
        return ""
    if not have:
        return ("**No checkpoints yet.** Put the model folders in `checkpoints/` "
                f"({', '.join(f'`{n}`' for n in MODELS.values())}) or set `{CHECKPOINTS_ENV}`.")
    missing = [f"`{MODELS[label]}`" for label in MODELS if label not in have]
    return f"Not available here yet: {', '.join(missing)}."


def run_demo(image: Any, model_label: str = DEFAULT_MODEL, skeleton: bool = True,
             show_ids: bool = False, whole_image_if_no_face: bool = False) -> tuple[np.ndarray, str, str, str]:
    """The ``predict`` event: keypoints drawn on the photo, JSON and CSV files, a summary.

    ``image`` is the upload as Gradio sends it, a path or an RGB array (see
    :func:`load_photo`). JSON and CSV points are in the pixels of the photo as
    uploaded, even when a huge photo was shrunk for the detector and the picture.
    """
    if image is None:
        raise gr.Error("Upload a photo first (or take one with the webcam).")
    if model_label not in MODELS:
        raise gr.Error(f"Unknown model {model_label!r}; choose one of {list(MODELS)}.")
    name = MODELS[model_label]
    folder = checkpoint_folder(name)
    if folder is None:
        raise gr.Error(f"No checkpoint `{name}` yet: looked in {[str(r) for r in checkpoint_roots()]}. "
                       "Train or download it, or choose another model.")
    image, photo_size = load_photo(image)
    layout = FACTS.get(str(read_config(folder).get("layout")))
    start = time.perf_counter()
    try:
        if whole_image_if_no_face:
            found = predict_faces(folder, image, whole_image_if_no_face=True)
        else:  # the two-argument call: stand-ins for predict_faces in tests take no third
            found = predict_faces(folder, image)
        faces = [as_face(f) for f in found]
    except NoFaceFoundError as e:
        raise gr.Error(f"no face found in this {photo_size[0]}x{photo_size[1]} photo. Try one where the "
                       f"face is larger and frontal, or tick \"{WHOLE_IMAGE_LABEL}\" and run again to "
                       "place the points on the whole photo.", print_exception=False) from e
    except ValueError as e:  # kpcore's other user-input errors (bad image) are ValueErrors
        raise gr.Error(str(e), print_exception=False) from e
    ms = (time.perf_counter() - start) * 1000
    whole = whole_image_if_no_face and len(faces) == 1 and faces[0].score == WHOLE_IMAGE_SCORE
    drawn = image
    for face in faces:
        drawn = draw_keypoints(drawn, face.points, layout if skeleton else None, show_ids=show_ids)
    boxes = [f.box for f in faces if f.box is not None]
    if boxes and not whole:
        drawn = draw_boxes(drawn, boxes, [f"{f.score:.2f}" if f.score is not None else ""
                                          for f in faces if f.box is not None])
    h, w = image.shape[:2]
    photo_faces = [to_photo_pixels(f, (w, h), photo_size) for f in faces]
    json_path, csv_path = write_outputs(photo_faces, name, layout, photo_size)
    k = len(faces[0].points) if faces else 0
    if whole:
        summary = f"No face found: {k} points placed on the whole photo · `{name}` · {ms:.0f} ms"
    elif faces:
        summary = f"{len(faces)} face(s) · {k} points each · `{name}` · {ms:.0f} ms"
    else:
        summary = f"No face found by `{name}`."
    if (w, h) != photo_size:
        summary += (f" · shown at {w}x{h}; the JSON and CSV points are in the "
                    f"{photo_size[0]}x{photo_size[1]} photo's pixels")
    return drawn, json_path, csv_path, summary


# ---------------------------------------------------------------- face morph
MORPH_MODEL = "face68-300w"
"""Checkpoint folder whose 68 points drive the morph (looked up like :data:`MODELS`)."""
MORPH_FRAMES = 12
MORPH_MAX_FRAMES = 48
MORPH_FPS = 12
MEAN_FACE_MIN_PHOTOS = 2
MEAN_FACE_MAX_PHOTOS = 24  # each photo costs a detection and a warp (~0.2 s on 2 CPU cores)


class _DemoFaceFinder:
    """:func:`predict_faces` with one checkpoint, in the form ``kpcore.morph.FaceMorpher`` wants."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def predict(self, image: np.ndarray) -> list[Face]:
        return [as_face(f) for f in predict_faces(self.folder, image)]


def morph_availability() -> str:
    """Markdown line saying whether the morph's checkpoint is here (empty when it is)."""
    if checkpoint_folder(MORPH_MODEL) is not None:
        return ""
    return (f"**Face morph is not available yet:** it needs the 68-point checkpoint `{MORPH_MODEL}` "
            f"(being trained). Put it in `checkpoints/{MORPH_MODEL}/` or set `{CHECKPOINTS_ENV}`.")


def _morpher():
    from kpcore.morph import FaceMorpher

    folder = checkpoint_folder(MORPH_MODEL)
    if folder is None:
        raise gr.Error(f"Face morph needs the checkpoint `{MORPH_MODEL}`, which is not here yet: looked in "
                       f"{[str(r) for r in checkpoint_roots()]}. Train or download it.")
    return FaceMorpher(_DemoFaceFinder(folder))


def _align(morpher, photo: Any, label: str):
    try:
        return morpher.align(photo)
    except ValueError as e:  # kpcore's BadImageError / NoFaceFoundError
        raise gr.Error(f"{label}: {e}") from e


def _morph_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / "kpcore_live" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def run_morph(photo_a: np.ndarray | None, photo_b: np.ndarray | None, n_frames: int = MORPH_FRAMES,
              loop_back: bool = True) -> tuple[np.ndarray, str, str, str | None, str]:
    """The ``morph`` event: the half-way face, the sequence as GIF (shown and to download) and MP4, a summary."""
    from kpcore.morph import boomerang, morph, morph_sequence, save_gif, save_mp4

    if photo_a is None or photo_b is None:
        raise gr.Error("Upload two photos, A and B, first.")
    n_frames = int(n_frames)
    if not 2 <= n_frames <= MORPH_MAX_FRAMES:
        raise gr.Error(f"Frames must be between 2 and {MORPH_MAX_FRAMES}; got {n_frames}.")
    morpher = _morpher()
    start = time.perf_counter()
    a, b = _align(morpher, photo_a, "Photo A"), _align(morpher, photo_b, "Photo B")
    found = time.perf_counter()
    try:
        frames = morph_sequence(a.image, a.points, b.image, b.points, n_frames)
        midway = morph(a.image, a.points, b.image, b.points, 0.5)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    morphed = time.perf_counter()
    folder = _morph_folder()
    shown = boomerang(frames) if loop_back else frames
    gif = str(save_gif(shown, folder / "morph.gif", MORPH_FPS))
    try:
        mp4 = str(save_mp4(shown, folder / "morph.mp4", MORPH_FPS))
    except RuntimeError:  # no MP4 encoder in this OpenCV build: the GIF is enough
        mp4 = None
    summary = (f"{n_frames} frames of {a.image.shape[1]}x{a.image.shape[0]} · faces found in "
               f"{(found - start) * 1000:.0f} ms · morphed in {(morphed - found) * 1000:.0f} ms · "
               f"files written in {(time.perf_counter() - morphed) * 1000:.0f} ms"
               + ("" if mp4 else " · no MP4 encoder here, GIF only"))
    return midway, gif, gif, mp4, summary


def run_mean_face(files: list[Any] | None) -> tuple[np.ndarray, str]:
    """The ``mean_face`` event: the average face of the uploaded photos, and a summary."""
    from kpcore.morph import mean_face

    paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files or []]
    if len(paths) < MEAN_FACE_MIN_PHOTOS:
        raise gr.Error(f"Upload at least {MEAN_FACE_MIN_PHOTOS} photos with a face each.")
    if len(paths) > MEAN_FACE_MAX_PHOTOS:
        raise gr.Error(f"Upload at most {MEAN_FACE_MAX_PHOTOS} photos; got {len(paths)}.")
    morpher = _morpher()
    faces, skipped = [], []
    for path in paths:
        try:
            faces.append(morpher.align(path))
        except ValueError as e:  # one bad photo should not spoil the others
            skipped.append(f"`{Path(path).name}`: {e}")
    if len(faces) < MEAN_FACE_MIN_PHOTOS:
        raise gr.Error(f"Only {len(faces)} of {len(paths)} photos have a usable face; need "
                       f"{MEAN_FACE_MIN_PHOTOS}. " + " ".join(skipped))
    image, _ = mean_face([f.image for f in faces], [f.points for f in faces])
    summary = f"Mean of {len(faces)} faces."
    if skipped:
        summary += " Skipped " + "; ".join(skipped)
    return image, summary


def _morph_tab() -> None:
    """The "Face morph" tab; call inside ``build_demo``'s Blocks."""
    with gr.Tab("Face morph", id="morph"):
        gr.Markdown("Two photos in: the largest face in each is found, both are cropped to one framing, "
                    "and the face in A turns into the face in B along its 68 keypoints.")
        notice = gr.Markdown(morph_availability())
        with gr.Row():
            photo_a = gr.Image(label="Photo A", sources=["upload", "webcam", "clipboard"], type="numpy",
                               image_mode="RGB", elem_id="morph-a")
            photo_b = gr.Image(label="Photo B", sources=["upload", "webcam", "clipboard"], type="numpy",
                               image_mode="RGB", elem_id="morph-b")
        with gr.Row():
            n_frames = gr.Slider(2, MORPH_MAX_FRAMES, value=MORPH_FRAMES, step=1, label="Frames (A to B)")
            loop_back = gr.Checkbox(value=True, label="Loop back to A")
        button = gr.Button("Morph", variant="primary", elem_id="morph-run")
        summary = gr.Markdown(elem_id="morph-summary")
        with gr.Row():
            midway = gr.Image(label="Half way", type="numpy", interactive=False, format="png",
                              elem_id="morph-midway")
            animation = gr.Image(label="Morph (GIF)", type="filepath", interactive=False,
                                 elem_id="morph-gif")
        with gr.Row():
            gif_file = gr.DownloadButton("Morph as GIF", size="md", elem_id="morph-gif-file")
            mp4_file = gr.DownloadButton("Morph as MP4", size="md", elem_id="morph-mp4-file")
        button.click(run_morph, inputs=[photo_a, photo_b, n_frames, loop_back],
                     outputs=[midway, animation, gif_file, mp4_file, summary], api_name="morph")

        gr.Markdown("### Mean face of several photos")
        photos = gr.File(label="Photos", file_count="multiple", file_types=["image"], type="filepath",
                         elem_id="mean-photos")
        mean_button = gr.Button("Average the faces", elem_id="mean-run")
        with gr.Row():
            mean_image = gr.Image(label="Mean face", type="numpy", interactive=False, format="png",
                                  elem_id="mean-result")
            mean_summary = gr.Markdown(elem_id="mean-summary")
        mean_button.click(run_mean_face, inputs=[photos], outputs=[mean_image, mean_summary],
                          api_name="mean_face")
    # No triggers: runs on page load, so the notice clears once the checkpoint arrives.
    gr.on(None, morph_availability, outputs=notice, api_visibility="private", show_progress="hidden")


# ---------------------------------------------------------------------- UI
def example_photos() -> list[list[str]]:
    """Photos in ``webapp/examples/`` (licensed ones, with a credits file), one example each."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return [[str(p)] for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in EXAMPLE_SUFFIXES]


def build_demo() -> gr.Blocks:
    """The demo's Blocks; loads nothing until the first prediction."""
    with gr.Blocks(title="kpcore live demo", analytics_enabled=False) as demo:
        gr.Markdown("## Facial keypoints, live\nUpload a photo or use the webcam, choose a model, "
                    "and download the points as JSON or CSV. Points are `(x, y)` pixels of your photo.")
        notice = gr.Markdown(availability())
        with gr.Tab("Keypoints", id="keypoints"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo", sources=["upload", "webcam", "clipboard"], type="numpy",
                                     image_mode="RGB", elem_id="kp-photo")
                    model = gr.Dropdown(list(MODELS), value=DEFAULT_MODEL, label="Model", elem_id="kp-model")
                    with gr.Row():
                        skeleton = gr.Checkbox(value=True, label="Skeleton")
                        show_ids = gr.Checkbox(value=False, label="Point ids")
                    whole_image = gr.Checkbox(value=False, label=WHOLE_IMAGE_LABEL, elem_id="kp-whole")
                    button = gr.Button("Find keypoints", variant="primary", elem_id="kp-run")
                    examples = example_photos()
                    if examples:
                        gr.Examples(examples, inputs=[photo], label="Example photos")
                with gr.Column():
                    result = gr.Image(label="Keypoints", type="numpy", interactive=False, format="png",
                                      elem_id="kp-result")
                    summary = gr.Markdown(elem_id="kp-summary")
                    with gr.Row():
                        json_file = gr.DownloadButton("Points as JSON", size="md", elem_id="kp-json")
                        csv_file = gr.DownloadButton("Points as CSV", size="md", elem_id="kp-csv")
        # preprocess=False: the photo arrives as the uploaded file, and kpcore (not
        # Gradio) decodes it, with kpcore's messages for bad files (see load_photo).
        # New inputs go last, with defaults, so older API calls keep working.
        gr.on([button.click, photo.upload], run_demo, inputs=[photo, model, skeleton, show_ids, whole_image],
              outputs=[result, json_file, csv_file, summary], api_name="predict", preprocess=False)
        demo.load(availability, outputs=notice, api_visibility="private")
        _morph_tab()
        add_video_tabs()  # "Webcam" and "Video": kpcore.track on a camera stream or a file
    return demo


if __name__ == "__main__":
    build_demo().launch(server_name="127.0.0.1", server_port=7861)
