"""The Keypoints and Face morph tabs of the Gradio demo (webapp/live.py) at the handler level: what a
user sees after each event, without a server or a browser (issue 19's "Live demo" items).

``predict_faces`` is replaced by a stand-in that puts a 68-point ring on a face box, so no model runs;
checkpoints are the shipped ``config.json`` files copied to a temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kpcore.live.render import PRED_COLOR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """webapp.live with the shipped checkpoints' configs in tmp_path and a ring for every photo's face."""
    from webapp import live

    for name in ("face68-300w", "face58-imm"):
        (tmp_path / name).mkdir()
        shutil.copy(REPO / "checkpoints" / name / "config.json", tmp_path / name / "config.json")
    monkeypatch.setattr(live, "checkpoint_roots", lambda: [tmp_path])

    def ring(folder, image):
        h, w = image.shape[:2]
        k = 58 if folder.name == "face58-imm" else 68
        t = np.linspace(0, 2 * np.pi, k, endpoint=False)
        points = np.stack([w / 2 + 0.3 * w * np.cos(t), h / 2 + 0.35 * h * np.sin(t)], axis=1)
        # a face filling the photo, as in a cropped portrait
        return [{"points": points, "box": [0.05 * w, 0.1 * h, 0.9 * w, 0.85 * h], "score": 1.0,
                 "confidence": 0.93}]

    monkeypatch.setattr(live, "predict_faces", ring)
    return live


@pytest.fixture
def toasts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every gr.Warning / gr.Info / gr.Success the handlers raise, in order."""
    import gradio as gr

    shown: list[str] = []
    for kind in ("Warning", "Info", "Success"):
        monkeypatch.setattr(gr, kind, lambda message, *a, **k: shown.append(message))
    return shown


def portrait(side: int = 112) -> np.ndarray:
    """A small photo with a smooth left-right gradient, so enlarged pixels show as equal blocks."""
    x = np.linspace(40, 220, side, dtype=np.float64)
    image = np.empty((side, side, 3), np.uint8)
    image[:] = x.round().astype(np.uint8)[None, :, None]
    return image


def text_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "notes.jpg") -> dict:
    """A text file named like a photo, as Gradio hands an upload to the handler."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    path = tmp_path / "gradio" / "abc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a picture at all")
    return {"path": str(path), "orig_name": name}


# ---------------------------------------------------------------- small photos
def test_a_112_px_photo_is_shown_enlarged_with_whole_pixels_and_its_points_in_its_own_pixels(live) -> None:
    photo = portrait(112)
    error, drawn, crops, summary, json_button, _ = live.run_demo_ui(photo)
    assert error == "" and drawn.shape == (560, 560, 3)  # 5x: the longer side reaches SHOW_MIN_SIDE (480)
    assert "shown 5x enlarged" in summary
    # whole pixels, no smoothing: away from the overlay each photo pixel is a 5x5 block of one colour
    block = drawn[535:540, 5:10]
    assert (block == block[0, 0]).all() and tuple(block[0, 0]) == tuple(photo[107, 1])
    # the JSON's points are in the 112 px photo's pixels, and each is drawn where it lands when enlarged
    data = json.loads(Path(json_button["value"]).read_text())
    assert data["image_size"] == [112, 112]
    x, y = data["faces"][0]["points"][0]  # the ring's rightmost point, on no other mark
    assert x < 112 and tuple(drawn[round((y + 0.5) * 5 - 0.5), round((x + 0.5) * 5 - 0.5)]) == PRED_COLOR
    # the face's label is whole (it was cut at the photo's left edge: "ce 1 · 100%"): the whole text fits
    assert crops[0][1] == "face 1 · 100% · conf 0.93"


def test_the_api_keeps_the_photo_s_own_size(live) -> None:
    drawn, *_ = live.run_demo(portrait(112))
    assert drawn.shape == (112, 112, 3)


def test_photos_of_ordinary_size_are_not_enlarged(live) -> None:
    _, drawn, _, summary, _, _ = live.run_demo_ui(portrait(512))
    assert drawn.shape == (512, 512, 3) and "enlarged" not in summary


# ---------------------------------------------------------------- one message per event
def test_quick_bad_files_give_one_message_each_in_the_red_box_and_no_toasts(live, toasts, tmp_path,
                                                                            monkeypatch) -> None:
    bad = text_file(tmp_path, monkeypatch)
    for _ in range(6):  # a user dropping bad files quickly: toasts piled up to "Warning (6)"
        error, drawn, crops, summary, json_button, csv_button = live.run_demo_ui(bad)
        assert error.count("Could not use this photo.") == 1 and "&#x27;notes.jpg&#x27; is not an image" in error
        assert drawn is None and crops is None and summary == "" and json_button["interactive"] is False
    assert toasts == []
    # a good photo next: its result with no message at all (nothing from the bad file stays over it)
    error, drawn, *_ = live.run_demo_ui(portrait(512))
    assert error == "" and drawn is not None and toasts == []


def test_morph_and_mean_face_errors_show_in_their_box_only(live, toasts, tmp_path, monkeypatch) -> None:
    bad = text_file(tmp_path, monkeypatch)
    for _ in range(3):  # "Warning (3)": morph toasts never closed
        error, midway, shown, gif_button, mp4, summary = live.run_morph_ui(None, bad)
        assert "Could not morph." in error and "Upload two photos" in error
        assert midway is None and shown is None and mp4 is None and summary == ""
    error, image, summary = live.run_mean_face_ui([bad])
    assert "Could not average the faces." in error and "at least 2 photos" in error and image is None
    assert toasts == []


# ---------------------------------------------------------------- controls redraw at once
def test_every_control_of_the_keypoints_tab_reruns_the_photo(live) -> None:
    demo = live.build_demo()
    config = demo.get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    page = [d for d in config["dependencies"] if {ids.get(t[0]) for t in d["targets"]} >= {"kp-run", "kp-photo"}]
    assert len(page) == 1
    triggers = {(ids.get(t[0]), t[1]) for t in page[0]["targets"]}
    assert {("kp-ids", "change"), ("kp-skeleton", "change"), ("kp-model", "change"),
            ("kp-whole", "change")} <= triggers  # "Point ids" did nothing until the button was pressed
    assert page[0]["trigger_mode"] == "always_last"


def test_point_ids_change_the_drawn_result(live) -> None:
    photo = portrait(512)
    plain = live.run_demo_ui(photo, show_ids=False)[1]
    with_ids = live.run_demo_ui(photo, show_ids=True)[1]
    changed = np.any(with_ids != plain, axis=-1).sum()  # 68 numbers in white with a black outline
    assert changed > 68 * 20, changed


# ---------------------------------------------------------------- IMM models say what they suit
def test_imm_models_say_they_suit_studio_portraits_in_the_menu_and_the_result(live) -> None:
    choices = dict(live.model_choices())  # shown label -> value
    assert set(choices.values()) == set(live.MODELS)  # the API's values are unchanged
    imm = [label for label, value in choices.items() if live.MODELS[value].endswith("-imm")]
    assert imm and all("studio portraits only" in label for label in imm)
    assert all("studio" not in label for label, value in choices.items() if label not in imm)
    summary = live.run_demo_ui(portrait(512), "Face, 58 points (IMM)")[3]
    assert "`face58-imm` is trained on IMM's 240 studio portraits" in summary and "300-W model" in summary
    assert "studio" not in live.run_demo_ui(portrait(512))[3]


# ---------------------------------------------------------------- page script
def test_the_page_script_replaces_broken_previews_and_unclips_captions(live) -> None:
    config = live.build_demo().get_config_file()
    scripts = [d.get("js") or "" for d in config["dependencies"]]
    page = [js for js in scripts if "No preview" in js]
    assert len(page) == 1
    assert all(f"#{box}" in page[0] or f'"{box}"' in page[0] for box in live.PHOTO_BOXES)
    assert "#kp-faces .caption-label" in page[0]
