"""The Batch triage page and kpcore.evaluation.triage on a small synthetic batch table:
five photos on disk (two labelled with a 300-W .pts file), faces with known errors,
one photo without a face, one unreadable file and two frames of a video.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from kpcore.evaluation import triage as tr
from kpcore.evaluation.metrics import nme as nme_metric
from webapp import triage as page_helpers

from .conftest import DATA_ROOT

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = str(REPO / "webapp" / "dashboard.py")
APPTEST_TIMEOUT = 90
K = 68
PHOTO_W, PHOTO_H = 320, 240
META = {"model": "test-face68", "kpcore": "0.0.test", "num_points": K}


def face_points(cx: float, cy: float, r: float, seed: int) -> np.ndarray:
    """68 points in a face-sized ellipse; 36 and 45 (outer eye corners) are 2r apart."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, K, endpoint=False)
    pts = np.stack([cx + r * np.cos(t), cy + 1.2 * r * np.sin(t)], axis=1) + rng.normal(0, 1, (K, 2))
    pts[36], pts[45] = (cx - r, cy - 0.2 * r), (cx + r, cy - 0.2 * r)
    return pts


def write_pts(path: Path, pts: np.ndarray) -> None:
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)  # .pts is 1-based
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def face_row(source: Path, face: int, pts: np.ndarray, confidence: float, yaw: float = 0.0,
             frame: int | None = None) -> dict:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    row = {"source": str(source), "frame": frame, "face": face, "status": "ok", "error": None,
           "image_width": PHOTO_W, "image_height": PHOTO_H,
           "box_x": lo[0], "box_y": lo[1], "box_w": hi[0] - lo[0], "box_h": hi[1] - lo[1],
           "det_score": 0.9, "confidence": confidence, "yaw": yaw, "pitch": 2.0, "roll": -1.0}
    row |= {f"x{j}": pts[j, 0] for j in range(K)} | {f"y{j}": pts[j, 1] for j in range(K)}
    row |= {f"pc{j}": confidence for j in range(K)}
    return row


def empty_row(source: Path, status: str, error: str, size: tuple[int, int] | None) -> dict:
    return {"source": str(source), "frame": None, "face": None, "status": status, "error": error,
            "image_width": None if size is None else size[0], "image_height": None if size is None else size[1]}


def build_table(folder: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """The synthetic collection and its table; returns the table and the NME of each labelled face."""
    photos = folder / "photos"
    photos.mkdir(parents=True)
    rows, truth = [], {}
    # a.jpg: one labelled face, predicted 12 px off on every point (a failure: NME 12 / 60 = 20%).
    # b.jpg: a labelled face predicted 1.2 px off (NME 2%) and an unlabelled second face.
    # c.jpg, d.jpg: unlabelled faces; e.jpg: no face; broken.jpg: not an image.
    specs = {"a": [(160, 120, 30, 0.05, 12.0, -40.0)], "b": [(100, 110, 30, 0.9, 1.2, 5.0), (250, 80, 15, 0.2, None, 60.0)],
             "c": [(160, 120, 30, 0.6, None, 0.0)], "d": [(160, 120, 25, 0.8, None, 10.0)]}
    for i, (stem, faces) in enumerate(specs.items()):
        path = photos / f"{stem}.jpg"
        Image.new("RGB", (PHOTO_W, PHOTO_H), (120 + 20 * i, 110, 100)).save(path)
        for f, (cx, cy, r, conf, offset, yaw) in enumerate(faces):
            true = face_points(cx, cy, r, seed=10 * i + f)
            pred = true + (offset or 0.0) / np.sqrt(2)
            rows.append(face_row(path, f, pred, conf, yaw))
            if offset is not None:
                write_pts(path.with_suffix(".pts"), true)
                truth[str(path)] = offset / np.linalg.norm(true[36] - true[45])
    e = photos / "e.jpg"
    Image.new("RGB", (PHOTO_W, PHOTO_H), (10, 10, 10)).save(e)
    rows.append(empty_row(e, "no_face", "no face found in the 320x240 image", (PHOTO_W, PHOTO_H)))
    broken = photos / "broken.jpg"
    broken.write_text("not a photo")
    rows.append(empty_row(broken, "unreadable", "broken.jpg is not a readable image (it looks like text)", None))
    video = photos / "clip.mp4"  # not on disk: its faces are drawn on a blank canvas
    for frame in (0, 1):
        rows.append(face_row(video, 0, face_points(160, 120, 30, seed=99 + frame), 0.7, frame=frame))
    rows[-1] |= {"status": "low_confidence", "error": "confidence 0.700 is below min_confidence 0.75"}
    df = pd.DataFrame(rows)
    for c in ("frame", "face", "image_width", "image_height"):
        df[c] = df[c].astype("Int64")
    return df, truth


def write_table(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table.replace_schema_metadata({tr.METADATA_KEY: json.dumps(META).encode()}), path)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:  # .jsonl, .ndjson
        df.to_json(path, orient="records", lines=True)
    return path


@pytest.fixture
def collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    df, truth = build_table(tmp_path / "data")
    batch = tmp_path / "batch"
    table = write_table(df, batch / "run1" / "table.parquet")
    monkeypatch.setenv(page_helpers.BATCH_ENV, str(batch))
    return {"df": df, "truth": truth, "batch": batch, "table": table, "tmp": tmp_path}


# ------------------------------------------------------------------ reading
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".ndjson"])
def test_the_three_formats_read_back_the_same_faces(collection, suffix: str) -> None:
    path = write_table(collection["df"], collection["tmp"] / f"t{suffix}")
    df = tr.read_table(path)
    assert tr.num_points(df) == K and len(df) == len(collection["df"])
    assert np.allclose(tr.points(tr.faces(df)), tr.points(tr.faces(collection["df"])))
    assert tr.counts(df) == tr.counts(collection["df"])
    assert df.attrs["kpcore"] == (META if suffix == ".parquet" else {})
    from_bytes = tr.read_table(path.read_bytes(), name=f"upload{suffix}")
    assert np.allclose(from_bytes["confidence"], df["confidence"], equal_nan=True)


def test_a_table_with_missing_columns_names_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"source": ["a.jpg"], "status": ["ok"], "confidence": [0.5]}).to_csv(path, index=False)
    with pytest.raises(tr.TriageTableError, match=r"missing column\(s\) frame, face, error, box_x"):
        tr.read_table(path)
    with pytest.raises(tr.TriageTableError, match=r"ends in \.parquet, \.pq, \.csv, \.jsonl, \.ndjson; got '\.txt'"):
        tr.read_table(tmp_path / "t.txt")


# ----------------------------------------------------------------- counting
def test_counts_reasons_and_faces_per_image(collection) -> None:
    df = collection["df"]
    assert tr.counts(df) == {"inputs": 7, "images": 8, "faces": 7, "low_confidence": 1, "no_face": 1,
                              "unreadable": 1, "error": 0}
    why = tr.reasons(df)
    assert set(why["status"]) == {"no_face", "unreadable"} and why["rows"].sum() == 2
    assert "<file> is not a readable image" in why.set_index("status").loc["unreadable", "reason"]
    more = pd.concat([df, pd.DataFrame([empty_row(Path(f"/x/y/bad{i}.jpg"), "unreadable",
                                                  f"'/x/y/bad{i}.jpg' is not an image", None) for i in range(3)])])
    assert tr.reasons(more).set_index("reason").loc["'<file>' is not an image", "rows"] == 3  # one reason, 3 files
    per_image = tr.faces_per_image(df)
    assert len(per_image) == 7  # the unreadable file is not an image with 0 faces
    assert sorted(per_image.tolist()) == [0, 1, 1, 1, 1, 1, 2]
    assert per_image[str(collection["tmp"] / "data" / "photos" / "clip.mp4") + "#1"] == 1


def test_face_filter_keeps_the_faces_inside_every_range(collection) -> None:
    faces = tr.read_table(collection["table"]).pipe(tr.faces)
    assert tr.FaceFilter().mask(faces).all()
    kept = faces[tr.FaceFilter(confidence=(0.5, 1.0), yaw=(-10, 20)).mask(faces)]
    assert sorted(kept["confidence"]) == [0.6, 0.7, 0.7, 0.8, 0.9]
    small = faces[tr.FaceFilter(side=(0, 40)).mask(faces)]
    assert small["confidence"].tolist() == [0.2]  # the one small face (r = 15)
    assert tr.lowest_confidence(faces, 2)["confidence"].tolist() == [0.05, 0.2]
    video = faces[faces["frame"].notna()]  # one tracked face over two frames
    assert len(tr.lowest_confidence(video, 5)) == 2 and len(tr.lowest_confidence(video, 5, one_per_track=True)) == 1


# ------------------------------------------------------------------- labels
def test_labels_are_matched_to_the_overlapping_face_and_give_its_nme(collection) -> None:
    df = tr.read_table(collection["table"])
    match = tr.match_labels(df)
    assert match.labelled == 2 and match.matched == 2 and not match.missed and not match.bad
    labelled = df[match.nme.notna()]
    assert sorted(Path(s).name for s in labelled["source"]) == ["a.jpg", "b.jpg"]
    assert (labelled["face"] == 0).all()  # b.jpg's second face is not the labelled one
    for index, row in labelled.iterrows():
        assert match.nme[index] == pytest.approx(collection["truth"][row["source"]], rel=1e-3)  # .pts hold 3 decimals
        true = np.loadtxt(Path(row["source"]).with_suffix(".pts"), skiprows=3, max_rows=K) - 1
        norm = np.linalg.norm(true[36] - true[45])
        assert match.nme[index] == pytest.approx(nme_metric(tr.points(df.loc[[index]]), true[None], [norm])[0])


def test_a_label_over_no_detected_face_is_missed_and_a_broken_one_is_reported(collection) -> None:
    photos = collection["tmp"] / "data" / "photos"
    write_pts(photos / "c.pts", face_points(40, 40, 10, seed=5))  # far from c.jpg's detected face
    write_pts(photos / "e.pts", face_points(160, 120, 30, seed=6))  # e.jpg: no face found
    (photos / "d.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    match = tr.match_labels(tr.read_table(collection["table"]))
    assert sorted(Path(s).name for s in match.missed) == ["c.jpg", "e.jpg"]
    assert len(match.bad) == 1 and "d.pts" in match.bad[0] and "68" in match.bad[0]
    assert match.matched == 2 and match.labelled == 4


# ------------------------------------------------------------------ ranking
def test_failures_in_lowest_counts_by_hand() -> None:
    nme = np.array([0.20, 0.02, 0.09, 0.03, 0.01, 0.04, 0.05, 0.03, 0.02, 0.10, 0.03, np.nan])
    conf = np.array([0.10, 0.90, 0.20, 0.80, 0.95, 0.70, 0.60, 0.85, 0.90, 0.75, 0.88, 0.00])
    r = tr.failures_in_lowest(nme, conf, fraction=0.1)
    # 11 labelled faces, failures 0.20, 0.09, 0.10; the lowest 10% rounds up to 2 faces: 0.20 and 0.09
    assert (r.faces, r.failures, r.inspected, r.found) == (11, 3, 2, 2)
    assert r.share == pytest.approx(2 / 3) and r.random == pytest.approx(2 / 11) and r.best == pytest.approx(2 / 3)
    assert tr.failures_in_lowest(nme, -conf, 0.1).found == 0  # confidence upside down finds none
    with pytest.raises(ValueError, match="fraction"):
        tr.failures_in_lowest(nme, conf, 0.0)


def test_ranking_curve_runs_from_nothing_to_everything_and_never_beats_the_best() -> None:
    rng = np.random.default_rng(0)
    nme = rng.gamma(2.0, 0.02, 400)
    conf = 1 - nme + rng.normal(0, 0.03, 400)
    curve = tr.ranking_curve(nme, conf)
    assert curve.iloc[0][["inspected", "found"]].tolist() == [0, 0]
    assert curve.iloc[-1][["inspected", "found", "best"]].tolist() == [1, 1, 1]
    assert np.all(np.diff(curve["found"]) >= 0) and np.all(curve["found"] <= curve["best"] + 1e-12)
    lowest = tr.failures_in_lowest(nme, conf)
    assert curve["found"].iloc[lowest.inspected] == pytest.approx(lowest.share)
    assert lowest.share > 2 * lowest.random  # an informative confidence beats random order


# ------------------------------------------------------------------ folders
def test_paths_outside_the_batch_folder_are_refused(collection) -> None:
    root = collection["batch"]
    assert page_helpers.resolve_under(root, "run1/table.parquet") == collection["table"].resolve()
    assert page_helpers.resolve_under(root, str(collection["table"])) == collection["table"].resolve()
    outside = write_table(collection["df"], collection["tmp"] / "elsewhere.parquet")
    (root / "link.parquet").symlink_to(outside)
    for bad in ("../elsewhere.parquet", str(outside), "link.parquet", "/etc/passwd"):
        with pytest.raises(ValueError, match="outside the batch folder"):
            page_helpers.resolve_under(root, bad)
    with pytest.raises(ValueError, match="not a batch table"):
        page_helpers.resolve_under(root, "run1")
    assert page_helpers.list_tables(root) == [collection["table"]]  # not the link out
    assert page_helpers.batch_dir() == root.resolve()


# --------------------------------------------------------------------- page
def open_triage() -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=APPTEST_TIMEOUT).run()
    at.switch_page("views/triage.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_counts_charts_faces_ranking_and_download(collection) -> None:
    at = open_triage()
    assert at.selectbox(key="triage_table").value == "run1/table.parquet"
    m = metrics(at)
    assert (m["images"], m["faces"], m["no face"], m["unreadable"], m["errors"]) == ("8", "7", "1", "1", "0")
    assert "model: `test-face68`" in at.caption[0].value
    assert len(list(at.get("plotly_chart"))) == 6  # per image, confidence, pose, size, ranking, NME vs confidence
    captions = [im.proto.imgs[0].caption for im in at.image]
    assert len(captions) == 6 and captions[0].startswith("#1 · a.jpg · face 0 · conf 0.05 · NME 20.0%")
    assert sum("clip.mp4 · frame" in c for c in captions) == 1  # one frame per tracked face
    assert "points are drawn on a blank canvas" in "\n".join(c.value for c in at.caption)  # the video is not on disk
    assert m["labelled faces"] == "2" and m["failures (NME > 8%)"] == "1"
    assert m["failures in lowest 10%"] == "100% (1 of 1)"
    assert at.get("download_button")[0].proto.label == "CSV (7 rows)"

    at.checkbox(key="triage_per_track").uncheck().run()  # the video's second frame too
    assert len(at.image) == 7
    at.slider(key="triage_confidence").set_value((0.5, 1.0)).run()
    assert not at.exception
    assert at.get("download_button")[1].proto.label == "Parquet (5 rows)"
    assert len(at.image) == 5
    at.checkbox(key="triage_with_rest").check().run()
    assert at.get("download_button")[0].proto.label == "CSV (7 rows)"  # 5 faces and the 2 rows without one


def test_page_download_bytes_read_back_as_a_batch_table(collection) -> None:
    df = tr.read_table(collection["table"])
    kept = tr.faces(df)[tr.FaceFilter(confidence=(0.5, 1.0)).mask(tr.faces(df))]
    csv, parquet = page_helpers.table_csv(kept), page_helpers.table_parquet(kept, df.attrs["kpcore"])
    back = tr.read_table(parquet, name="kept.parquet")
    assert back.attrs["kpcore"] == META and len(back) == 5 and tr.SIDE in back  # SIDE is added again on reading
    assert tr.SIDE not in pq.read_table(io.BytesIO(parquet)).column_names
    assert np.allclose(tr.points(tr.read_table(csv, name="kept.csv")), tr.points(kept))


def test_page_refuses_a_path_outside_the_folder_and_reads_an_upload(collection, monkeypatch) -> None:
    monkeypatch.setenv("KPCORE_DATA", str(collection["tmp"] / "elsewhere"))
    at = open_triage()
    at.text_input(key="triage_path").input("../data/photos/a.pts").run()
    assert "outside the batch folder" in at.error[0].value and not at.metric
    at.text_input(key="triage_path").input("").run()
    at.radio(key="triage_mode").set_value("upload").run()
    assert "Upload a table" in at.info[0].value
    upload = write_table(collection["df"], collection["tmp"] / "up.jsonl")
    at.file_uploader(key="triage_upload").set_value(("up.jsonl", upload.read_bytes(), "application/json")).run()
    assert not at.exception, [e.value for e in at.exception]
    # The upload names photos outside the batch folder and the data root: counted, never read.
    assert metrics(at)["faces"] == "7" and "labelled faces" not in metrics(at)
    assert "6 of these faces come from a photo or video not readable here" in "\n".join(c.value for c in at.caption)


def test_an_uploaded_table_reads_photos_and_labels_under_the_data_root(collection, monkeypatch) -> None:
    monkeypatch.setenv("KPCORE_DATA", str(collection["tmp"] / "data"))
    at = open_triage()
    at.radio(key="triage_mode").set_value("upload").run()
    upload = write_table(collection["df"], collection["tmp"] / "up.csv")
    at.file_uploader(key="triage_upload").set_value(("up.csv", upload.read_bytes(), "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metrics(at)["labelled faces"] == "2"
    assert "1 of these faces come from a photo or video not readable here" in "\n".join(c.value for c in at.caption)  # the video


def test_page_with_no_tables_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(page_helpers.BATCH_ENV, str(tmp_path / "empty"))
    at = open_triage()
    assert "kpcore predict" in at.info[0].value and str(tmp_path / "empty") in at.info[0].value


def test_unlabelled_collection_shows_no_ranking(collection) -> None:
    for pts in (collection["tmp"] / "data" / "photos").glob("*.pts"):
        os.remove(pts)
    at = open_triage()
    assert "labelled faces" not in metrics(at)
    assert any("No label files" in c.value for c in at.caption)
    assert len(list(at.get("plotly_chart"))) == 4


# ------------------------------------------------------- a real batch table
HELEN = DATA_ROOT / "ibug_300W_subset" / "helen" / "testset"
# Two photos with one face each, and one where the detector also finds a second, unlabelled face.
HELEN_PHOTOS = ("296814969_3", "2968560214_1", "2985256907_1")


@pytest.mark.skipif(not HELEN.is_dir(), reason=f"300-W helen testset not found under {DATA_ROOT}; set KPCORE_DATA")
def test_page_on_a_table_written_by_kpcore_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpcore.live.batch import BatchOptions, run_batch

    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in HELEN_PHOTOS:
        for suffix in (".jpg", ".pts"):
            shutil.copy(HELEN / f"{stem}{suffix}", photos)
    (photos / "notes.jpg").write_text("not a photo")
    batch = tmp_path / "batch"
    # RetinaFace alone: it also finds the bystander in 2985256907_1.jpg, which the default cascade skips
    run_batch([photos], batch / "helen.parquet", options=BatchOptions(detector="retinaface"))
    monkeypatch.setenv(page_helpers.BATCH_ENV, str(batch))

    at = open_triage()
    m = metrics(at)
    assert (m["images"], m["faces"], m["unreadable"], m["labelled faces"]) == ("4", "4", "1", "3")
    match = tr.match_labels(tr.read_table(batch / "helen.parquet"))
    assert match.matched == 3 and (match.nme.dropna() < 0.08).all()  # three well-predicted frontal faces
    first = at.image[0].proto.imgs[0].caption
    assert first.startswith("#1 · 2985256907_1.jpg · face 1") and "NME" not in first  # the unlabelled extra face
    assert "nothing to rank" in at.info[0].value
