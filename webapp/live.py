"""Gradio live demo: a photo in, keypoints, head pose and confidence out (image, face close-ups, JSON, CSV).

``build_demo()`` builds the Blocks; nothing is loaded until the first request.
``app.py`` mounts it at ``/gradio`` next to the Streamlit dashboard. Alone:
``python -m webapp.live`` serves it on http://127.0.0.1:7861.

API: the main event is ``api_name="predict"`` with the photo first, so::

    from gradio_client import Client, handle_file
    Client("http://host:port/gradio/").predict(handle_file("face.jpg"), api_name="/predict")

returns ``(annotated image, JSON file, CSV file, summary markdown)`` and raises
``AppError`` with kpcore's message for an unusable photo. The inputs after the
photo (model, skeleton, point ids, "use the whole image if no face is found")
all have defaults. The page itself uses a private twin of it
(:func:`run_demo_ui`) that never leaves an earlier photo's results on screen:
every output is replaced on a new photo or a changed control (model, skeleton, point
ids, whole image), cleared when the photo is removed, and on an error cleared with the
message shown in a red box above the result (one message per event, no toast). Photos
smaller than :data:`SHOW_MIN_SIDE` are shown enlarged by a whole factor (the API returns
the photo's own size). Every photo input (keypoints, morph,
mean face) skips Gradio's own image decoding
(``preprocess=False``): kpcore's :func:`~kpcore.data.imageio.load_image` reads the
uploaded file, so a broken, hostile or unsupported file gets kpcore's message
(a ``gr.Error``, raised by ``gradio_client`` as ``AppError``), odd encodings
(16-bit, CMYK, transparency, animation, EXIF rotation) are read the kpcore way,
and huge photos are shrunk, with points still given in the photo's own pixels.

The "Face morph" tab (:func:`_morph_tab`, computing in ``kpcore.live.morph``) has
``api_name="morph"`` (photo A, photo B, frames, loop back -> half-way face, GIF
shown, GIF file, H.264 MP4 file or None, summary) and ``api_name="mean_face"``
(a list of photo files -> mean face, summary); both use the ``face68-300w``
checkpoint and read photos with kpcore's loader too.

Overlays are drawn per face (:func:`kpcore.live.render.draw_faces`): marker sizes
follow each face's box, boxes are labelled ``face N · 99%`` (the detector's
score) plus the keypoint model's confidence when it has one, low-confidence
faces and points are orange / hollow, and 68-point faces get head-pose axes
(:mod:`kpcore.live.pose`).

Checkpoints are looked up by folder name (:data:`MODELS`) in ``$KPCORE_CHECKPOINTS``
(``os.pathsep``-separated folders) and then in ``<repo>/checkpoints``. The one
call into kpcore is :func:`predict_faces` (tests replace it).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from kpcore.data.facts import FACTS, DatasetFacts
from kpcore.data.imageio import load_image_with_info
from kpcore.errors import NoFaceFoundError
from kpcore.live.render import (
    LOW_CONFIDENCE,
    FaceMark,
    display_factor,
    draw_faces,
    enlarge,
    enlarged_points,
    face_crop,
)
from kpcore.models.checkpoint import read_config
from webapp import demo_files
from webapp.checkpoints import CHECKPOINTS_ENV, checkpoint_roots, find_checkpoint, predictor
from webapp.demo_files import RefusedFile, accepted_upload, new_output_folder, payload_path
from webapp.live_video import add_video_tabs
from webapp.serving import PHOTO_CONCURRENCY, QUEUE_MAX_SIZE

EXAMPLES_DIR = demo_files.EXAMPLES_DIR
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# Dropdown label -> checkpoint folder name.
MODELS: dict[str, str] = {
    "Face, 68 points (300-W)": "face68-300w",
    "Face, 68 points, ResNet18 from scratch (300-W)": "face68-300w-resnet18",
    "Face, 58 points (IMM)": "face58-imm",
    "Nose tip, 1 point (IMM)": "nose-imm",
}
DEFAULT_MODEL = next(iter(MODELS))
STUDIO_ONLY = ("trained on IMM's 240 studio portraits (one frontal face, plain background, even light): "
               "on other photos its points scatter; use a 300-W model for ordinary photos")
"""Why the IMM models suit only IMM-style photos; said in the model menu and under every result they give."""
MODEL_NOTES: dict[str, str] = {
    "face58-imm": STUDIO_ONLY,
    "nose-imm": STUDIO_ONLY,
}
"""Checkpoint folder -> what a user must know before trusting its points (in the menu's info and the result)."""
STUDIO_ONLY_TAG = " · studio portraits only"


def model_choices() -> list[tuple[str, str]]:
    """The "Model" menu as ``(shown label, value)``: values stay :data:`MODELS`' keys (the API's), labels warn."""
    return [(label + (STUDIO_ONLY_TAG if MODEL_NOTES.get(name) else ""), label) for label, name in MODELS.items()]


MODEL_INFO = ("The 300-W models suit ordinary photos. The IMM ones (\"studio portraits only\") were "
              "trained on 240 studio portraits with a plain background and scatter their points elsewhere.")
WHOLE_IMAGE_LABEL = "Use the whole image if no face is found"
WHOLE_IMAGE_SCORE = 0.0
"""The score kpcore gives the whole-image "face" of ``predict(..., whole_image_if_no_face=True)``."""


POSE_LAYOUT_POINTS = 68
"""Head pose is estimated for layouts with this many points (300-W's)."""
CROP_SIDE = 256
SHOW_MIN_SIDE = 480
"""A photo whose longer side is below this is shown enlarged by a whole factor (each pixel repeated, so no
smoothing) to at least this side, with the points drawn at that size: a 112 px portrait was shown 112 px wide."""
"""Side in pixels of each face's close-up in the gallery."""
FACE_CROPS_MAX = 24
"""At most this many close-ups (the largest faces); every face is still in the image and the files."""


@dataclass
class Face:
    """One detected face, as the demo uses it."""

    points: np.ndarray  # (K, 2) original-image pixels
    box: list[float] | None  # (left, top, width, height)
    score: float | None
    confidence: float | None = None  # the keypoint model's trust in this face, [0, 1]
    point_confidence: np.ndarray | None = None  # (K,) the same per point
    pose: dict | None = None  # {"yaw", "pitch", "roll"} in degrees


# ---------------------------------------------------------------- kpcore calls
def checkpoint_folder(name: str) -> Path | None:
    """The first ``<root>/<name>/`` holding a ``config.json`` (:mod:`webapp.checkpoints`), or None."""
    return find_checkpoint(name, checkpoint_roots())


def predict_faces(folder: Path, image: np.ndarray, whole_image_if_no_face: bool = False) -> list[Any]:
    """Detect the faces in an RGB ``uint8`` photo and predict their points with the checkpoint in ``folder``.

    Returns ``kpcore.live.predict.FacePrediction`` objects (``box``, ``score``, ``points``);
    with ``whole_image_if_no_face`` a photo without a detected face gives one
    "face" covering the whole image, with score :data:`WHOLE_IMAGE_SCORE`.
    Raises kpcore's ``ValueError`` subclasses for unusable photos (too small, no face).
    """
    return predictor(str(folder)).predict(image, whole_image_if_no_face=whole_image_if_no_face)


def load_photo(photo: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo as an RGB ``uint8`` array (shrunk when huge) and its ``(width, height)`` as uploaded.

    ``photo`` is what the ``predict`` event receives: Gradio's upload payload
    (a dict with ``path`` and ``orig_name``), or an object with ``.path``, or a
    path, accepted only inside Gradio's upload folder or the shipped examples
    (:func:`webapp.demo_files.accepted_upload`); an array (Python callers, tests)
    gets the same image checks. Everything is read by kpcore's loader; its
    ``BadImageError`` becomes a ``gr.Error`` naming the file as the user called it
    (never a server path).
    """
    if isinstance(photo, np.ndarray):  # Python callers and tests: the same checks as a file
        try:
            image, info = load_image_with_info(photo)
        except ValueError as e:
            raise user_error(str(e)) from e
        return image, info.size
    upload = accepted_photo(photo)
    try:
        data = io.BytesIO(upload.path.read_bytes())
    except OSError as e:  # the upload vanished from the server's temp folder
        raise user_error(f"The photo {upload.name} could not be read back on the server "
                         f"({type(e).__name__}); upload it again.") from e
    data.name = upload.name  # the label in kpcore's messages, never the server path
    try:
        image, info = load_image_with_info(data)
    except ValueError as e:  # kpcore's BadImageError: what is wrong and what to do
        raise user_error(str(e)) from e  # the user's file, not a server fault
    return image, info.size


def accepted_photo(photo: Any) -> demo_files.Upload:
    """The uploaded file a photo input names, or a ``gr.Error`` (see :func:`webapp.demo_files.accepted_upload`)."""
    try:
        return accepted_upload(photo, "photo")
    except RefusedFile as e:
        raise user_error(str(e)) from None


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` for a user's mistake: no traceback in the server log; a toast (API, other callers) stays until closed."""
    return gr.Error(message, duration=None, print_exception=False)


def no_face_message(size: tuple[int, int], whole_image_option: bool = True) -> str:
    """What to say when the detector finds no face, naming the control that helps."""
    text = (f"No face found in this {size[0]}x{size[1]} photo. Try one where the face is larger, "
            "frontal and well lit")
    if whole_image_option:
        text += f", or tick \"{WHOLE_IMAGE_LABEL}\" and run again to place the points on the whole photo"
    return text + "."


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
    return dataclasses.replace(face, points=points, box=box)


def as_face(face: Any) -> Face:
    """kpcore's face (attributes or dict) in the demo's form."""
    def get(name: str) -> Any:
        return face.get(name) if isinstance(face, dict) else getattr(face, name, None)

    points = np.asarray(get("points"), dtype=np.float64).reshape(-1, 2)
    box, score, confidence = get("box"), get("score"), get("confidence")
    point_confidence, pose = get("point_confidence"), get("pose")
    return Face(points, None if box is None else [float(v) for v in box],
                None if score is None else float(score),
                None if confidence is None else float(confidence),
                None if point_confidence is None else np.asarray(point_confidence, np.float64).ravel(),
                None if pose is None else {k: float(v) for k, v in dict(pose).items()})


def with_pose(face: Face, image_size: tuple[int, int]) -> Face:
    """``face`` with a head pose when it has 68 points and none yet (kpcore's Predictor sets it)."""
    if face.pose is not None or len(face.points) != POSE_LAYOUT_POINTS:
        return face
    from kpcore.live.pose import estimate_pose

    return dataclasses.replace(face, pose=estimate_pose(face.points, image_size))


# ------------------------------------------------------------------- outputs
def faces_json(faces: list[Face], model: str, layout: str | None, size: tuple[int, int]) -> dict:
    return {
        "model": model,
        "layout": layout,
        "image_size": list(size),
        "convention": "(x, y) pixels, 0-based, pixel centres",
        "pose_convention": "degrees; yaw > 0: face turned to the image's right (the subject's left), "
                           "pitch > 0: face up, roll > 0: clockwise in the image (kpcore.live.pose)",
        "faces": [{"box": None if f.box is None else [round(v, 2) for v in f.box],
                   "score": None if f.score is None else round(f.score, 4),
                   "confidence": None if f.confidence is None else round(f.confidence, 4),
                   "pose": None if f.pose is None else {k: round(v, 2) for k, v in f.pose.items()},
                   "points": f.points.round(2).tolist(),
                   "point_confidence": None if f.point_confidence is None else
                   np.round(f.point_confidence, 3).tolist()} for f in faces],
    }


def write_outputs(faces: list[Face], model: str, layout: DatasetFacts | None,
                  size: tuple[int, int]) -> tuple[str, str]:
    """Write ``keypoints.json`` and ``keypoints.csv`` to a fresh output folder; return their paths."""
    folder = new_output_folder()
    json_path, csv_path = folder / "keypoints.json", folder / "keypoints.csv"
    json_path.write_text(json.dumps(faces_json(faces, model, layout.name if layout else None, size),
                                    separators=(",", ":")))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for i, face in enumerate(faces):
            pose = face.pose or {}
            per_face = [_fmt(face.score, 4), _fmt(face.confidence, 4),
                        *(_fmt(pose.get(k), 2) for k in ("yaw", "pitch", "roll"))]
            for j, (x, y) in enumerate(face.points):
                group = layout.group_of[j] if layout is not None and j < layout.num_points else ""
                pc = face.point_confidence[j] if face.point_confidence is not None and \
                    j < len(face.point_confidence) else None
                writer.writerow([i + 1, j, group, f"{x:.2f}", f"{y:.2f}", _fmt(pc, 3), *per_face])
    return str(json_path), str(csv_path)


CSV_HEADER = ["face", "point", "group", "x", "y", "point_confidence", "face_score", "face_confidence",
              "yaw", "pitch", "roll"]
"""One row per point; the face's values repeat on each of its rows (faces are numbered from 1, as drawn)."""


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


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


@dataclass
class DemoResult:
    """Everything one photo gives: the picture, the close-ups, the files and the summary."""

    drawn: np.ndarray
    crops: list[tuple[np.ndarray, str]]
    json_path: str
    csv_path: str
    summary: str


def face_label(index: int, face: Face, whole: bool) -> str:
    """The text over a face's box: its number, the detector's score, and the model's confidence."""
    if whole:
        return "whole image (no face found)"
    label = f"face {index}"
    if face.score is not None:
        label += f" · {face.score:.0%}"
    if face.confidence is not None:
        label += f" · conf {face.confidence:.2f}"
    return label


def face_mark(index: int, face: Face, whole: bool) -> FaceMark:
    """How :func:`kpcore.live.render.draw_faces` should draw this face."""
    origin = None
    if len(face.points) == POSE_LAYOUT_POINTS and np.all(np.isfinite(face.points[30])):
        origin = (float(face.points[30, 0]), float(face.points[30, 1]))  # the nose tip
    low = face.confidence is not None and face.confidence < LOW_CONFIDENCE
    return FaceMark(points=face.points, box=None if whole else face.box, label=face_label(index, face, whole),
                    point_confidence=face.point_confidence, low=low, pose=face.pose, axes_origin=origin)


def _summary_table(faces: list[Face]) -> str:
    """One Markdown row per face: box, score, confidence, pose."""
    has_conf = any(f.confidence is not None for f in faces)
    has_pose = any(f.pose is not None for f in faces)
    head = ["face", "box (left, top, w, h)", "detector score"]
    head += ["keypoint confidence"] if has_conf else []
    head += ["yaw", "pitch", "roll"] if has_pose else []
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, f in enumerate(faces, 1):
        box = "-" if f.box is None else ", ".join(f"{v:.0f}" for v in f.box)
        cells = [str(i), box, "-" if f.score is None else f"{f.score:.0%}"]
        if has_conf:
            low = f.confidence is not None and f.confidence < LOW_CONFIDENCE
            cells.append("-" if f.confidence is None else f"{f.confidence:.2f}" + (" (low)" if low else ""))
        if has_pose:
            cells += ["-"] * 3 if f.pose is None else [f"{f.pose[k]:+.0f}°" for k in ("yaw", "pitch", "roll")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


LEGEND = ("**How to read it:** the % beside each face is the face detector's score (how sure it is "
          "there is a face there); *conf* is the keypoint model's own confidence in that face's points. "
          "Orange boxes and hollow orange rings mark faces and points whose confidence is below "
          f"{LOW_CONFIDENCE:.1f}: don't trust those. Axes on the nose: red = the face's left-right, "
          "green = down, blue = where the face points. Yaw > 0: turned to the image's right; "
          "pitch > 0: looking up; roll > 0: tilted clockwise.")


def predict_photo(image: Any, model_label: str = DEFAULT_MODEL, skeleton: bool = True,
                  show_ids: bool = False, whole_image_if_no_face: bool = False,
                  show_min_side: int = 0) -> DemoResult:
    """Detect, predict, draw and write the files for one photo; raises ``gr.Error`` with a clear message.

    ``show_min_side``: a photo whose longer side is smaller is drawn enlarged by a whole factor
    (:data:`SHOW_MIN_SIDE` on the page; 0, the API's, keeps the photo's own pixels).
    """
    if image is None:
        raise user_error("Upload a photo first (or click one of the example photos).")
    if model_label not in MODELS:
        raise user_error(f"Unknown model {model_label!r}; choose one of {list(MODELS)}.")
    name = MODELS[model_label]
    folder = checkpoint_folder(name)
    if folder is None:
        raise user_error(f"No checkpoint `{name}` on this server yet. Choose another model in the "
                         "\"Model\" menu (or, if you run the server, put it in `checkpoints/`).")
    image, photo_size = load_photo(image)
    layout = FACTS.get(str(read_config(folder).get("layout")))
    h, w = image.shape[:2]
    start = time.perf_counter()
    try:
        if whole_image_if_no_face:
            found = predict_faces(folder, image, whole_image_if_no_face=True)
        else:  # the two-argument call: stand-ins for predict_faces in tests take no third
            found = predict_faces(folder, image)
        faces = [with_pose(as_face(f), (w, h)) for f in found]
        # Numbered left to right, as people read a group photo (face 1 is the leftmost).
        faces.sort(key=lambda f: f.box[0] if f.box is not None else 0.0)
    except NoFaceFoundError as e:
        raise user_error(no_face_message(photo_size)) from e
    except ValueError as e:  # kpcore's other user-input errors (bad image) are ValueErrors
        raise user_error(str(e)) from e
    ms = (time.perf_counter() - start) * 1000
    whole = whole_image_if_no_face and len(faces) == 1 and faces[0].score == WHOLE_IMAGE_SCORE
    marks = [face_mark(i, f, whole) for i, f in enumerate(faces, 1)]
    zoom = display_factor(h, w, show_min_side)
    drawn = draw_faces(enlarge(image, zoom), [enlarged_mark(m, zoom) for m in marks],
                       layout if skeleton else None, show_ids=show_ids)
    largest = sorted(range(len(marks)), key=lambda i: -(faces[i].box[2] * faces[i].box[3] if faces[i].box else 0))
    crops = [(face_crop(image, marks[i], layout if skeleton else None, size=CROP_SIDE), marks[i].label)
             for i in sorted(largest[:FACE_CROPS_MAX])]
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
    elif zoom > 1:
        summary += (f" · this {w}x{h} photo is shown {zoom}x enlarged; the JSON and CSV points are in its "
                    "own pixels")
    if MODEL_NOTES.get(name) and faces:
        summary += f"\n\n**`{name}` is {MODEL_NOTES[name]}.**"
    if faces and not whole:
        summary += "\n\n" + _summary_table(photo_faces) + "\n\n" + LEGEND
    return DemoResult(drawn, crops, json_path, csv_path, summary)


def enlarged_mark(mark: FaceMark, factor: int) -> FaceMark:
    """``mark`` in the pixels of its photo :func:`~kpcore.live.render.enlarge` d by ``factor``."""
    if factor == 1:
        return mark
    box = None if mark.box is None else [v * factor for v in mark.box]  # edges scale exactly
    origin = None if mark.axes_origin is None else \
        tuple(enlarged_points(np.array([mark.axes_origin]), factor)[0].tolist())
    return dataclasses.replace(mark, points=enlarged_points(mark.points, factor), box=box, axes_origin=origin)


def run_demo(image: Any, model_label: str = DEFAULT_MODEL, skeleton: bool = True,
             show_ids: bool = False, whole_image_if_no_face: bool = False) -> tuple[np.ndarray, str, str, str]:
    """The ``predict`` API: keypoints drawn on the photo, JSON and CSV files, a summary.

    ``image`` is the upload as Gradio sends it, a path or an RGB array (see
    :func:`load_photo`). JSON and CSV points are in the pixels of the photo as
    uploaded, even when a huge photo was shrunk for the detector and the picture.
    Raises ``gr.Error`` (``AppError`` in ``gradio_client``) with a message saying what to do.
    """
    r = predict_photo(image, model_label, skeleton, show_ids, whole_image_if_no_face)
    return r.drawn, r.json_path, r.csv_path, r.summary


UI_OUTPUTS = 6
"""What :func:`run_demo_ui` updates: error box, result, close-ups, summary, JSON button, CSV button."""


PHOTO_ERROR_TITLE = "Could not use this photo."
MORPH_ERROR_TITLE = "Could not morph."
MEAN_ERROR_TITLE = "Could not average the faces."


def error_box(message: str, title: str = PHOTO_ERROR_TITLE) -> str:
    """The red box shown above the result, kept until the next photo or run."""
    import html

    return (f"<div class='kp-error' role='alert' style='border:2px solid #d92626;background:#fdecec;"
            f"color:#7a0b0b;padding:10px 14px;border-radius:8px;font-size:15px'><b>{html.escape(title)}</b> "
            f"{html.escape(message)}</div>")


def cleared(message: str = "") -> tuple:
    """Every output of the Keypoints tab emptied (and the error box set to ``message``, if any)."""
    buttons = gr.update(value=None, interactive=False)
    return (error_box(message) if message else "", None, None, "", buttons, buttons)


def run_demo_ui(image: Any, model_label: str = DEFAULT_MODEL, skeleton: bool = True,
                show_ids: bool = False, whole_image_if_no_face: bool = False) -> tuple:
    """The page's event: like :func:`run_demo`, but no earlier photo's results ever stay on screen.

    No photo (removed): everything cleared. An error: everything cleared and the
    message in the red box above the result, which the next photo's result or message replaces:
    one message per event, never over a newer result. No toast: Gradio 6 groups toasts of one kind
    and its timer closes a group only while it holds one message, so quick bad files piled up as
    "Warning (6)" over the red box and the CSV button, and stayed.
    """
    if image is None:
        return cleared()
    try:
        r = predict_photo(image, model_label, skeleton, show_ids, whole_image_if_no_face, SHOW_MIN_SIDE)
    except gr.Error as e:
        return cleared(e.message)
    files = [gr.update(value=p, interactive=True) for p in (r.json_path, r.csv_path)]
    return ("", r.drawn, r.crops, r.summary, *files)


# ---------------------------------------------------------------- face morph
MORPH_MODEL = "face68-300w"
"""Checkpoint folder whose 68 points drive the morph (looked up like :data:`MODELS`)."""
MORPH_FRAMES = 12
MORPH_MAX_FRAMES = 48
MORPH_FPS = 12
MEAN_FACE_MIN_PHOTOS = 2
MEAN_FACE_MAX_PHOTOS = 24  # each photo costs a detection and a warp (~0.2 s on 2 CPU cores)
MORPH_QUEUE = {"concurrency_id": "morph", "concurrency_limit": 1}
"""Morphs and mean faces (up to 48 frames or 24 photos each) run one at a time."""


class _DemoFaceFinder:
    """:func:`predict_faces` with one checkpoint, in the form ``kpcore.live.morph.FaceMorpher`` wants."""

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
    from kpcore.live.morph import FaceMorpher

    folder = checkpoint_folder(MORPH_MODEL)
    if folder is None:
        raise user_error(f"Face morph needs the checkpoint `{MORPH_MODEL}`, which is not on this server yet "
                         "(whoever runs it can put it in `checkpoints/`).")
    return FaceMorpher(_DemoFaceFinder(folder))


def _align(morpher, photo: Any, label: str):
    """The largest face in one photo input, cropped; read by kpcore's loader, errors as ``gr.Error``."""
    try:
        image, _ = load_photo(photo)
    except gr.Error as e:
        raise user_error(f"{label}: {e.message}") from e
    try:
        return morpher.align(image)
    except NoFaceFoundError as e:
        raise user_error(f"{label}: " + no_face_message((image.shape[1], image.shape[0]), False)) from e
    except ValueError as e:  # kpcore's other user-input errors
        raise user_error(f"{label}: {e}") from e


def run_morph(photo_a: Any, photo_b: Any, n_frames: int = MORPH_FRAMES, loop_back: bool = True,
              progress: gr.Progress | None = None) -> tuple[np.ndarray, str, str, str | None, str]:
    """The ``morph`` event: the half-way face, the sequence as GIF (shown and to download), an H.264 MP4, a summary.

    The photos are Gradio upload payloads, paths or RGB arrays (:func:`load_photo`).
    """
    from kpcore.live.morph import boomerang, morph, morph_sequence, mp4_codec, save_gif, save_mp4

    def step(fraction: float, text: str) -> None:
        if progress is not None:
            progress(fraction, desc=text)

    if photo_a is None or photo_b is None:
        raise user_error("Upload two photos, A and B, first.")
    try:
        n_frames = int(n_frames)
    except (TypeError, ValueError) as e:
        raise user_error(f"Frames must be a whole number between 2 and {MORPH_MAX_FRAMES}; got {n_frames!r}.") from e
    if not 2 <= n_frames <= MORPH_MAX_FRAMES:
        raise user_error(f"Frames must be between 2 and {MORPH_MAX_FRAMES}; got {n_frames}.")
    morpher = _morpher()
    start = time.perf_counter()
    step(0.05, "Finding the face in photo A")
    a = _align(morpher, photo_a, "Photo A")
    step(0.2, "Finding the face in photo B")
    b = _align(morpher, photo_b, "Photo B")
    found = time.perf_counter()
    step(0.35, f"Morphing {n_frames} frames")
    try:
        frames = morph_sequence(a.image, a.points, b.image, b.points, n_frames)
        midway = morph(a.image, a.points, b.image, b.points, 0.5)
    except ValueError as e:
        raise user_error(str(e)) from e
    morphed = time.perf_counter()
    folder = new_output_folder()
    shown = boomerang(frames) if loop_back else frames
    step(0.6, "Writing the GIF")
    gif = str(save_gif(shown, folder / "morph.gif", MORPH_FPS))
    step(0.8, "Writing the MP4")
    try:
        mp4 = str(save_mp4(shown, folder / "morph.mp4", MORPH_FPS)) if mp4_codec() == "h264" else None
    except RuntimeError:  # FFmpeg failed: the GIF is enough
        mp4 = None
    summary = (f"{n_frames} frames of {a.image.shape[1]}x{a.image.shape[0]} · faces found in "
               f"{(found - start) * 1000:.0f} ms · morphed in {(morphed - found) * 1000:.0f} ms · "
               f"files written in {(time.perf_counter() - morphed) * 1000:.0f} ms"
               + ("" if mp4 else " · no H.264 encoder on this server (pip install imageio-ffmpeg): GIF only"))
    return midway, gif, gif, mp4, summary


def _file_payloads(files: Any) -> list[Any]:
    """The files of a multi-file upload: Gradio payload dicts, paths, or objects with ``.path``/``.name``."""
    if files is None:
        return []
    if isinstance(files, (dict, str, os.PathLike, np.ndarray)) or hasattr(files, "path"):
        files = [files]
    return list(files)


def _display_name(f: Any, index: int) -> str:
    """The name a user gave a photo of a multi-file upload; a number for arrays and refused files."""
    name = None if isinstance(f, np.ndarray) else payload_path(f)[1]
    return name or f"photo {index}"


def run_mean_face(files: list[Any] | None) -> tuple[np.ndarray, str]:
    """The ``mean_face`` event: the average face of the uploaded photos, and a summary.

    Each photo is read by kpcore's loader; one bad photo is skipped (and named),
    never with a server path.
    """
    from kpcore.live.morph import mean_face

    photos = _file_payloads(files)
    if len(photos) < MEAN_FACE_MIN_PHOTOS:
        raise user_error(f"Upload at least {MEAN_FACE_MIN_PHOTOS} photos with a face each.")
    if len(photos) > MEAN_FACE_MAX_PHOTOS:
        raise user_error(f"Upload at most {MEAN_FACE_MAX_PHOTOS} photos; got {len(photos)}.")
    morpher = _morpher()
    faces, skipped = [], []
    for i, photo in enumerate(photos, 1):
        name = _display_name(photo, i)
        try:
            faces.append(_align(morpher, photo, name))
        except gr.Error as e:  # one bad photo should not spoil the others
            skipped.append(e.message)
    if len(faces) < MEAN_FACE_MIN_PHOTOS:
        raise user_error(f"Only {len(faces)} of {len(photos)} photos have a usable face; need "
                         f"{MEAN_FACE_MIN_PHOTOS}. " + " ".join(skipped))
    image, _ = mean_face([f.image for f in faces], [f.points for f in faces])
    summary = f"Mean of {len(faces)} faces."
    if skipped:
        summary += " Skipped: " + " · ".join(skipped)
    return image, summary


def run_morph_ui(photo_a: Any, photo_b: Any, n_frames: int = MORPH_FRAMES, loop_back: bool = True,
                 progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's injection idiom
    """The Morph button: :func:`run_morph` with every output replaced, or cleared with the error shown.

    The error is shown in the red box under the button only (no toast: those never closed and piled
    up, "Warning (3)", over later results and other tabs); the next morph or photo replaces it.
    """
    try:
        midway, shown, gif, mp4, summary = run_morph(photo_a, photo_b, n_frames, loop_back, progress)
    except gr.Error as e:
        return (error_box(e.message, MORPH_ERROR_TITLE), None, None, gr.update(value=None, interactive=False),
                None, "")
    return ("", midway, shown, gr.update(value=gif, interactive=True), mp4, summary)


def run_mean_face_ui(files: Any) -> tuple:
    """The "Average the faces" button: :func:`run_mean_face`, or cleared with the error shown (no toast)."""
    try:
        image, summary = run_mean_face(files)
    except gr.Error as e:
        return error_box(e.message, MEAN_ERROR_TITLE), None, ""
    return "", image, summary


def _morph_tab() -> None:
    """The "Face morph" tab; call inside ``build_demo``'s Blocks."""
    with gr.Tab("Face morph", id="morph"):
        gr.Markdown("Two photos in: the largest face in each is found, both are cropped to one framing, "
                    "and the face in A turns into the face in B along its 68 keypoints.")
        notice = gr.Markdown(morph_availability())
        with gr.Row():
            photo_a = gr.Image(label="Photo A", sources=["upload", "clipboard"], type="filepath",
                               elem_id="morph-a")
            photo_b = gr.Image(label="Photo B", sources=["upload", "clipboard"], type="filepath",
                               elem_id="morph-b")
        with gr.Row():
            n_frames = gr.Slider(2, MORPH_MAX_FRAMES, value=MORPH_FRAMES, step=1, label="Frames (A to B)")
            loop_back = gr.Checkbox(value=True, label="Loop back to A")
        button = gr.Button("Morph", variant="primary", elem_id="morph-run")
        error = gr.HTML(elem_id="morph-error")
        summary = gr.Markdown(elem_id="morph-summary")
        with gr.Row():
            midway = gr.Image(label="Half way", type="numpy", interactive=False, format="png",
                              elem_id="morph-midway")
            animation = gr.Image(label="Morph (GIF)", type="filepath", interactive=False,
                                 elem_id="morph-gif")
            video = gr.Video(label="Morph (MP4, H.264)", interactive=False, autoplay=True, loop=True,
                             elem_id="morph-mp4")
        gif_file = gr.DownloadButton("Morph as GIF", size="md", elem_id="morph-gif-file", interactive=False)
        outputs = [error, midway, animation, gif_file, video, summary]
        # The page's button: never raises, so old results never outlive a new photo or an error.
        button.click(run_morph_ui, inputs=[photo_a, photo_b, n_frames, loop_back], outputs=outputs,
                     preprocess=False, api_visibility="private", **MORPH_QUEUE)
        for photo in (photo_a, photo_b):  # a new or removed photo: the old morph is no longer its morph
            photo.change(lambda: ("", None, None, gr.update(value=None, interactive=False), None, ""),
                         outputs=outputs, api_visibility="private", show_progress="hidden")
        # The API (gradio_client): raises AppError with the message. Its trigger is never shown.
        api = gr.Button(visible=False, elem_id="morph-api")
        api.click(run_morph, inputs=[photo_a, photo_b, n_frames, loop_back],
                  outputs=[midway, animation, gif_file, video, summary], api_name="morph", preprocess=False,
                  **MORPH_QUEUE)

        gr.Markdown("### Mean face of several photos")
        photos = gr.File(label="Photos", file_count="multiple", file_types=["image"], type="filepath",
                         elem_id="mean-photos")
        mean_button = gr.Button("Average the faces", elem_id="mean-run")
        mean_error = gr.HTML(elem_id="mean-error")
        with gr.Row():
            mean_image = gr.Image(label="Mean face", type="numpy", interactive=False, format="png",
                                  elem_id="mean-result")
            mean_summary = gr.Markdown(elem_id="mean-summary")
        mean_button.click(run_mean_face_ui, inputs=[photos], outputs=[mean_error, mean_image, mean_summary],
                          preprocess=False, api_visibility="private", **MORPH_QUEUE)
        photos.change(lambda: ("", None, ""), outputs=[mean_error, mean_image, mean_summary],
                      api_visibility="private", show_progress="hidden")
        mean_api = gr.Button(visible=False, elem_id="mean-api")
        mean_api.click(run_mean_face, inputs=[photos], outputs=[mean_image, mean_summary], api_name="mean_face",
                       preprocess=False, **MORPH_QUEUE)
    # No triggers: runs on page load, so the notice clears once the checkpoint arrives.
    gr.on(None, morph_availability, outputs=notice, api_visibility="private", show_progress="hidden")


# ---------------------------------------------------------------------- UI
def example_photos() -> list[list[str]]:
    """Photos in ``webapp/examples/`` (licensed ones, with a credits file), one example each."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return [[str(p)] for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in EXAMPLE_SUFFIXES]


FIT_FRAME_JS = """
() => {
  // Inside the dashboard's same-origin iframe: grow the iframe to the demo's height, so no tab
  // needs a scroll bar of its own. Alone in a tab (no frameElement) this does nothing.
  let frame = null;
  try { frame = window.frameElement; } catch (e) { return; }
  if (!frame) return;
  // Measure the content, not the container: Gradio's container grows to fill the frame, so its
  // height plus a margin would grow the frame again on every resize, without end.
  const fit = () => {
    const main = document.querySelector(".gradio-container .contain") || document.body;
    let bottom = 0;
    for (const el of main.children) bottom = Math.max(bottom, el.getBoundingClientRect().bottom);
    const footer = document.querySelector(".gradio-container footer");
    const h = Math.ceil(bottom + window.scrollY + (footer ? footer.getBoundingClientRect().height : 0)) + 48;
    if (Math.abs(frame.offsetHeight - h) > 8) { frame.style.height = h + "px"; frame.height = String(h); }
  };
  new ResizeObserver(fit).observe(document.body);
  setInterval(fit, 1000);
  fit();
}
"""
"""Run on page load (``demo.load(js=...)``): sizes the dashboard's iframe to the demo."""

PHOTO_BOXES = ("kp-photo", "morph-a", "morph-b")
"""The photo inputs whose preview says so in words when the browser cannot show the file."""
NO_PREVIEW_TEXT = ("No preview", "the browser cannot show this file as a picture")
PAGE_JS = """
() => {
  // 1. A photo input's preview of a file the browser cannot show (a text file named .jpg, a TIFF)
  // was a broken-image frame: draw a line of text in its place instead. Gradio sets a new src for
  // the next file, so nothing else changes.
  const boxes = __BOXES__.map((id) => "#" + id + " img").join(", ");
  const [title, line] = __TEXT__;
  const svg = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="120" viewBox="0 0 480 120">' +
    '<rect width="480" height="120" fill="#f4f4f5"/><g font-family="sans-serif" fill="#52525b" ' +
    'text-anchor="middle"><text x="240" y="52" font-size="22" font-weight="bold">' + title + "</text>" +
    '<text x="240" y="84" font-size="16">' + line + "</text></g></svg>");
  document.addEventListener("error", (ev) => {
    const img = ev.target;
    if (img instanceof HTMLImageElement && img.matches(boxes) && !img.src.startsWith("data:image/svg")) {
      img.src = svg;
      img.alt = title + ": " + line;
    }
  }, true);
  // 2. The close-ups' captions ("face 4 · 100% · conf 0.10") wrap instead of being cut to "face 4 · 10...".
  const style = document.createElement("style");
  style.textContent = "#kp-faces .caption-label { white-space: normal; max-width: 100%; overflow: visible; }";
  document.head.appendChild(style);
}
""".replace("__BOXES__", json.dumps(list(PHOTO_BOXES))).replace("__TEXT__", json.dumps(NO_PREVIEW_TEXT))
"""Run on page load (``demo.load(js=...)``): words instead of broken previews, whole close-up captions."""


PHOTO_QUEUE = {"concurrency_id": "photo", "concurrency_limit": PHOTO_CONCURRENCY}
"""The page's photo event and the ``predict`` API share one queue of :data:`PHOTO_CONCURRENCY` workers."""


def build_demo() -> gr.Blocks:
    """The demo's Blocks; loads nothing until the first prediction."""
    # fill_width: inside the dashboard's iframe Gradio's side margins left the result ~360 px wide
    # delete_cache: Gradio's copies of uploads and outputs go after the same age as the demo's own files
    with gr.Blocks(title="kpcore live demo", analytics_enabled=False, fill_width=True,
                   delete_cache=demo_files.GRADIO_DELETE_CACHE) as demo:
        gr.Markdown("## Facial keypoints, live\nUpload a photo or click an example: every face gets its 68 "
                    "points, head pose and confidence. Download the points as JSON or CSV; they are `(x, y)` "
                    "pixels of your photo.")
        notice = gr.Markdown(availability())
        with gr.Tab("Keypoints", id="keypoints"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    # No webcam here: the Webcam / Video tabs stream from a camera (webapp/live_video.py).
                    photo = gr.Image(label="Photo", sources=["upload", "clipboard"], type="filepath",
                                     elem_id="kp-photo", height=360)
                    model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model", info=MODEL_INFO,
                                        elem_id="kp-model")
                    with gr.Row():
                        skeleton = gr.Checkbox(value=True, label="Skeleton", elem_id="kp-skeleton")
                        show_ids = gr.Checkbox(value=False, label="Point ids", elem_id="kp-ids")
                    whole_image = gr.Checkbox(value=False, label=WHOLE_IMAGE_LABEL, elem_id="kp-whole")
                    button = gr.Button("Find keypoints", variant="primary", elem_id="kp-run")
                    examples = example_photos()
                    if examples:
                        gr.Examples(examples, inputs=[photo], label="Example photos (click one to run it)",
                                    elem_id="kp-examples", examples_per_page=8)
                with gr.Column(scale=3, min_width=360):
                    error = gr.HTML(elem_id="kp-error")
                    # no label badge: it covered the top-left face's label on group photos
                    result = gr.Image(label="Keypoints", show_label=False, type="numpy", interactive=False,
                                      format="png", elem_id="kp-result", buttons=["download", "fullscreen"])
                    with gr.Row():
                        json_file = gr.DownloadButton("Points as JSON", size="md", elem_id="kp-json",
                                                      interactive=False)
                        csv_file = gr.DownloadButton("Points as CSV", size="md", elem_id="kp-csv",
                                                     interactive=False)
            # fit_columns=False: one face stays one sixth of the row (it was blown up to the page's width)
            gallery = gr.Gallery(label="Each face, zoomed", columns=6, fit_columns=False, height="fit-content",
                                 object_fit="contain", elem_id="kp-faces", allow_preview=True, format="png")
            summary = gr.Markdown(elem_id="kp-summary")
            # The API's trigger, never shown; inside the tab so the tabs stay one row of tabs.
            api = gr.Button(visible=False, elem_id="kp-api")
        inputs = [photo, model, skeleton, show_ids, whole_image]
        # preprocess=False: the photo arrives as the uploaded file, and kpcore (not
        # Gradio) decodes it, with kpcore's messages for bad files (see load_photo).
        # The page's event never raises, so no output outlives a new photo, a removed one or an error;
        # photo.change covers uploads, removal and example clicks; a changed model or tick box redraws
        # at once ("Point ids" did nothing until the button was pressed again). trigger_mode="always_last":
        # gr.on takes its mode from the first trigger (a click: "once"), which drops a new photo that
        # arrives while the removal of the previous one is still being handled.
        gr.on([button.click, *(c.change for c in (photo, model, skeleton, show_ids, whole_image))], run_demo_ui,
              inputs=inputs,
              outputs=[error, result, gallery, summary, json_file, csv_file], preprocess=False,
              api_visibility="private", trigger_mode="always_last", **PHOTO_QUEUE)
        # The API: raises AppError with kpcore's message. New inputs go last, with defaults,
        # so older API calls keep working.
        api.click(run_demo, inputs=inputs, outputs=[result, json_file, csv_file, summary], api_name="predict",
                  preprocess=False, **PHOTO_QUEUE)
        demo.load(availability, outputs=notice, api_visibility="private")
        demo.load(None, js=FIT_FRAME_JS, api_visibility="private")
        demo.load(None, js=PAGE_JS, api_visibility="private")
        _morph_tab()
        add_video_tabs()  # "Webcam" and "Video": kpcore.live.track on a camera stream or a file
    # A bounded queue: a flood gets "busy, try again" (webapp/serving.py answers it in words, with a
    # per-tab bound too) instead of an ever longer wait for everyone.
    return demo.queue(max_size=QUEUE_MAX_SIZE)


if __name__ == "__main__":
    build_demo().launch(server_name="127.0.0.1", server_port=7861)
