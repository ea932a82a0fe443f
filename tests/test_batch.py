"""``kpcore predict INPUT... --out TABLE``: inputs, the table, its formats, resume after SIGKILL,
workers and the Ray engine (kpcore/live/batch.py)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from kpcore.cli import main as cli_main
from kpcore.live.batch import (
    METADATA_KEY,
    BatchOptions,
    InputError,
    expand_inputs,
    read_table,
    run_batch,
    table_schema,
    write_table,
)

from .conftest import DATA_ROOT, REPO

EXAMPLES = REPO / "webapp" / "examples"
HELEN = DATA_ROOT / "ibug_300W_subset" / "helen" / "testset"
MODEL = "face68-300w"
CLIP_FRAMES = 6
POINT_TOLERANCE = 1e-3
"""Engines and worker counts may run onnxruntime with other thread counts: same points within 0.001 px."""


def _helen(n: int) -> list[Path]:
    return sorted(HELEN.glob("*.jpg"))[:n] if HELEN.is_dir() else []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of mixed inputs: photos (one nested), a bad file, a face-less image, a video, a list."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "astronaut.jpg", root / "astronaut.jpg")
    shutil.copy(EXAMPLES / "group.jpg", root / "nested" / "deeper" / "group.jpg")
    for p in _helen(2):
        shutil.copy(p, root / p.name)
    (root / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (160, 120), (40, 120, 200)).save(root / "sky.png")
    (root / "labels.pts").write_text("version: 1\n")  # not a photo: a folder skips it (and says so)
    face = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((200, 200)))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
    for i in range(CLIP_FRAMES):
        frame = np.zeros((240, 320, 3), np.uint8)
        frame[20:220, 40 + 5 * i:240 + 5 * i] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return root


@pytest.fixture(scope="module")
def local_table(inputs: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "faces.parquet"
    summary = run_batch([inputs], out, model=MODEL, workers=1, chunk_size=3)
    return summary, read_table(out), out


def _sorted_frame(table: pa.Table):
    return table.to_pandas().sort_values(["source", "frame", "face"], na_position="first").reset_index(drop=True)


def assert_same_table(a: pa.Table, b: pa.Table) -> None:
    """Equal after sorting by source, frame, face: strings exactly, numbers within POINT_TOLERANCE."""
    assert a.schema.remove_metadata().equals(b.schema.remove_metadata())
    da, db = _sorted_frame(a), _sorted_frame(b)
    assert len(da) == len(db)
    for name in ("source", "status", "error"):
        assert da[name].tolist() == db[name].tolist(), name
    numbers = da.select_dtypes("number").columns
    np.testing.assert_allclose(da[numbers].to_numpy(float), db[numbers].to_numpy(float), atol=POINT_TOLERANCE,
                               rtol=0, equal_nan=True)


# ------------------------------------------------------------------ inputs
def test_expand_inputs_folders_globs_lists_and_videos(inputs: Path, tmp_path: Path) -> None:
    found = expand_inputs([inputs])
    names = [Path(s).name for s in found.sources]
    assert sorted(names) == sorted(["astronaut.jpg", "group.jpg", "notes.jpg", "sky.png", "clip.mp4",
                                    *(p.name for p in _helen(2))])
    assert all(Path(s).is_absolute() for s in found.sources)
    assert found.skipped == {".pts": 1} and "1 .pts" in found.describe_skipped()

    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n\n{inputs / 'astronaut.jpg'}\nmissing.jpg\n")
    found = expand_inputs([str(inputs / "**" / "*.jpg"), listing, inputs / "astronaut.jpg"])
    jpgs = sorted(p.as_posix() for p in inputs.rglob("*.jpg"))
    assert found.sources[:len(jpgs)] == jpgs  # the glob's matches, in order, then the list's new entry
    assert found.sources.count((inputs / "astronaut.jpg").as_posix()) == 1  # named three times, listed once
    assert (tmp_path / "missing.jpg").as_posix() in found.sources  # relative to the list; becomes a row


@pytest.mark.parametrize("args, match", [
    (["no/such/photo.jpg"], "is not a file, folder or pattern"),
    (["no/such/*.jpg"], "matches no file"),
])
def test_expand_inputs_names_what_is_wrong(args: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match):
        expand_inputs(args)


def test_an_empty_list_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no path"):
        expand_inputs([tmp_path / "empty.txt"])


# ------------------------------------------------------------------ the table
def test_every_input_has_rows_with_its_reason(local_table, inputs: Path) -> None:
    summary, table, out = local_table
    df = table.to_pandas()
    assert table.schema.remove_metadata().equals(table_schema(68))
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    assert meta["model"] == MODEL and meta["num_points"] == 68
    by_name = {Path(s).name: g for s, g in df.groupby("source")}
    assert set(by_name) == {Path(s).name for s in expand_inputs([inputs]).sources}  # nothing dropped
    bad = by_name["notes.jpg"]
    assert bad["status"].tolist() == ["unreadable"] and "not an image" in bad["error"].iloc[0]
    sky = by_name["sky.png"]
    assert sky["status"].tolist() == ["no_face"] and sky["image_width"].iloc[0] == 160
    assert sky["face"].isna().all() and sky["x0"].isna().all()
    group = by_name["group.jpg"]
    assert len(group) >= 5 and (group["status"] == "ok").all() and group["frame"].isna().all()
    areas = (group["box_w"] * group["box_h"]).to_numpy()
    assert group["face"].tolist() == list(range(len(group))) and (np.diff(areas) <= 0).all()  # largest first
    clip = by_name["clip.mp4"]
    assert clip["frame"].tolist() == list(range(CLIP_FRAMES)) and (clip["status"] == "ok").all()
    assert clip["confidence"].between(0, 1).all() and clip["det_score"].isna().all()
    ok = df[df["status"] == "ok"]
    assert ok["error"].isna().all() and ok[["yaw", "pitch", "roll", "confidence"]].notna().all().all()
    assert summary["faces"] == len(ok) and summary["unreadable"] == 1 and summary["inputs"] == len(by_name)
    assert not out.with_name(out.name + ".parts").exists()


def test_photo_rows_match_the_predictor(local_table, inputs: Path) -> None:
    from kpcore.live.predict import Predictor

    faces = Predictor.from_pretrained(MODEL).predict(inputs / "astronaut.jpg")
    row = _sorted_frame(local_table[1]).query("source.str.endswith('astronaut.jpg')").iloc[0]
    best = max(faces, key=lambda f: f.box[2] * f.box[3])
    xy = np.stack([row[[f"x{k}" for k in range(68)]].to_numpy(float), row[[f"y{k}" for k in range(68)]]
                   .to_numpy(float)], axis=1)
    np.testing.assert_allclose(xy, best.points, atol=POINT_TOLERANCE)
    assert row["confidence"] == pytest.approx(best.confidence, abs=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_reads_back_the_same_table(local_table, tmp_path: Path, suffix: str) -> None:
    table = local_table[1]
    path = write_table(table, tmp_path / f"faces{suffix}")
    assert_same_table(read_table(path), table)


def test_min_confidence_marks_faces_without_dropping_them(inputs: Path, tmp_path: Path) -> None:
    strict = run_batch([inputs / "nested"], tmp_path / "t.parquet", model=MODEL,
                       options=BatchOptions(min_confidence=0.999))
    df = read_table(tmp_path / "t.parquet").to_pandas()
    assert (df["status"] == "low_confidence").all() and df["error"].str.contains("below min_confidence").all()
    assert strict["faces"] == len(df) == strict["low_confidence"]


def test_the_unknown_format_is_refused_before_any_work(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="use one of .*parquet"):
        run_batch([inputs], tmp_path / "faces.xlsx", model=MODEL)


# ------------------------------------------------------------------ engines
def test_two_workers_give_the_table_of_one(local_table, inputs: Path, tmp_path: Path) -> None:
    summary = run_batch([inputs], tmp_path / "w2.parquet", model=MODEL, workers=2, chunk_size=2)
    assert summary["workers"] == 2
    assert_same_table(read_table(tmp_path / "w2.parquet"), local_table[1])


def test_ray_engine_gives_the_table_of_the_local_engine(local_table, inputs: Path, tmp_path: Path, capfd) -> None:
    ray = pytest.importorskip("ray", reason="Ray Data is the [ray] extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        capfd.readouterr()
        summary = run_batch([inputs], tmp_path / "ray.parquet", model=MODEL, workers=2, engine="ray", chunk_size=2)
        said = capfd.readouterr().err
    finally:
        ray.shutdown()
    assert summary["engine"] == "ray"
    assert_same_table(read_table(tmp_path / "ray.parquet"), local_table[1])
    # Ray Data's own progress notices are off (kpcore's bar and summary say it), its logger levels restored
    assert "Progress bars disabled" not in said and "execution finished" not in said, said
    assert logging.getLogger("ray.data._internal.execution.streaming_executor").level == logging.NOTSET


def test_ray_blocks_cut_inside_a_source_come_back_as_whole_sources() -> None:
    """Ray may cut a block between any two rows (a long video spans blocks): each source is given
    back once, whole, after its last row arrives; a block of whole sources passes as it is."""
    from kpcore.live.batch import _ROWS_COLUMN, WholeSources

    sources = ["a"] * 3 + ["b"] + ["c"] * 5 + ["d"] * 2
    rows = {s: sources.count(s) for s in sources}
    full = pa.table({"source": sources, "frame": list(range(len(sources))),
                     "x0": np.arange(len(sources), dtype=np.float64),
                     _ROWS_COLUMN: pa.array([rows[s] for s in sources], pa.int64())})
    whole = WholeSources()
    cuts = [0, 2, 2, 5, 7, 11]  # cut inside a, an empty block, inside c (twice), the end
    given = [whole.add(full.slice(a, b - a)) for a, b in itertools.pairwise(cuts)]
    assert [None if t is None else sorted(set(t.column("source").to_pylist())) for t in given] == \
        [None, None, ["a", "b"], None, ["c", "d"]]
    assert whole.pending == {}
    out = pa.concat_tables([t for t in given if t is not None])
    assert out.equals(full.drop_columns([_ROWS_COLUMN]))
    assert all(c.num_chunks == 1 for t in given if t is not None for c in t.columns)
    block = full.slice(3, 8)  # b, c, d: whole, nothing pending
    assert WholeSources().add(block).equals(block.drop_columns([_ROWS_COLUMN]))


def test_workers_default_to_one_per_core_but_not_more_than_the_chunks() -> None:
    from kpcore.live.batch import available_cores, default_workers

    assert default_workers("local", chunks=1) == 1
    assert default_workers("local", chunks=10_000) == available_cores()


# ------------------------------------------------------------------ resume
def _photos(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = [*sorted(EXAMPLES.glob("*.jpg")), *_helen(n)]
    for i, p in enumerate(sources[:n]):
        shutil.copy(p, folder / f"{i:02d}_{p.name}")
    return folder


def test_a_sigkilled_run_resumes_without_losing_or_repeating_a_face(tmp_path: Path) -> None:
    n = 48  # 24 chunks: at ~20 ms a photo the kill, one poll after the first part, lands mid-run
    if len(_helen(n)) < n:
        pytest.skip(f"needs helen/testset under {DATA_ROOT}")
    folder = _photos(tmp_path, n)
    out = tmp_path / "faces.parquet"
    parts = tmp_path / "faces.parquet.parts"
    cmd = [sys.executable, "-m", "kpcore", "predict", str(folder), "--out", str(out), "--chunk-size", "2"]
    env = {**os.environ, "KPCORE_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it was killed; the test needs more photos"
    partial = read_table(parts)  # the rows so far are readable after the kill
    assert 0 < len(set(partial.column("source").to_pylist())) < n

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "done by an earlier run" in rerun.stdout
    resumed = read_table(out)
    reference = tmp_path / "reference.parquet"
    run_batch([folder], reference, model=MODEL)
    keys = resumed.to_pandas()[["source", "frame", "face"]]
    assert not keys.duplicated().any()
    assert_same_table(resumed, read_table(reference))  # zero faces lost, none repeated
    assert not parts.exists()


def test_a_finished_table_is_kept_and_only_new_inputs_run(local_table, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.parquet"
    shutil.copy(local_table[2], out)
    extra = tmp_path / "new"
    extra.mkdir()
    shutil.copy(EXAMPLES / "cameraman.jpg", extra / "cameraman.jpg")
    summary = run_batch([inputs, extra], out, model=MODEL)
    assert summary["skipped_inputs"] == local_table[0]["inputs"] and summary["inputs"] == summary["skipped_inputs"] + 1
    table = read_table(out)
    new = table.filter(pc.equal(table.column("source"), (extra / "cameraman.jpg").as_posix()))
    assert len(new) >= 1 and len(table) == len(local_table[1]) + len(new)


def test_a_different_model_does_not_mix_into_unfinished_parts(tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "faces.parquet"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({"model": "other", "num_points": 68, "options": {}}))
    with pytest.raises(InputError, match="unfinished run made with other settings.*--overwrite"):
        run_batch([inputs / "astronaut.jpg"], out, model=MODEL)


def test_a_finished_table_of_another_model_is_not_extended(local_table, tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "faces.parquet"
    table = local_table[1]
    meta = {**json.loads(table.schema.metadata[METADATA_KEY]), "model": "other"}
    write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), out)
    with pytest.raises(InputError, match="made with model 'other'.*--overwrite"):
        run_batch([inputs / "astronaut.jpg"], out, model=MODEL)
    run_batch([inputs / "astronaut.jpg"], out, model=MODEL, overwrite=True)
    assert len(set(read_table(out).column("source").to_pylist())) == 1


# ------------------------------------------------------------------ command line
def test_cli_several_inputs_need_out(inputs: Path, capsys) -> None:
    code = cli_main(["predict", str(inputs / "astronaut.jpg"), str(inputs / "sky.png")])
    err = capsys.readouterr().err
    assert code == 2 and "need --out TABLE" in err and len(err.strip().splitlines()) == 1


def test_cli_writes_the_table_and_says_what_it_found(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "faces.csv"
    code = cli_main(["predict", str(inputs / "nested"), str(inputs / "sky.png"), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "2 inputs" in text and "1 with no face" in text and f"table: {out}" in text
    assert read_table(out).column("status").to_pylist().count("no_face") == 1


def test_cli_one_photo_keeps_its_printed_summary(inputs: Path, capsys) -> None:
    assert cli_main(["predict", MODEL, str(inputs / "astronaut.jpg")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("astronaut.jpg: 512x512, 1 face, 68 points each") and "face 1: box" in out


BYSTANDER_PHOTO = HELEN / "2985256907_1.jpg"
"""A portrait with a small face behind its subject: the cascade keeps BlazeFace's one large, sure face."""


@pytest.mark.skipif(not BYSTANDER_PHOTO.is_file(), reason=f"300-W helen testset not found under {DATA_ROOT}")
def test_retinaface_detector_finds_the_bystander_the_cascade_skips(tmp_path: Path, capsys) -> None:
    shutil.copy(BYSTANDER_PHOTO, tmp_path / BYSTANDER_PHOTO.name)
    faces = {}
    for detector in ("cascade", "retinaface"):
        table = tmp_path / f"{detector}.parquet"
        code = cli_main(["predict", str(tmp_path / BYSTANDER_PHOTO.name), "--out", str(table),
                         "--detector", detector])
        assert code == 0, capsys.readouterr().err
        faces[detector] = read_table(table).column("status").to_pylist().count("ok")
    assert faces == {"cascade": 1, "retinaface": 2}


def test_an_unknown_detector_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown detector 'dlib'; choose from cascade, retinaface"):
        run_batch([EXAMPLES / "astronaut.jpg"], tmp_path / "t.parquet", options=BatchOptions(detector="dlib"))


def test_batch_and_align_import_no_torch() -> None:
    code = "import sys, kpcore.live.batch, kpcore.live.align; print(sorted(m for m in sys.modules if m.split('.')[0] " \
           "in ('torch', 'torchvision', 'timm', 'ray')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_rows_table_puts_each_face_in_its_columns_and_nulls_for_failures():
    from kpcore.live.batch import _Rows

    rows = _Rows(3)
    pts = np.array([[1.5, 2.5], [3.25, 4.0], [5.0, 6.125]], np.float32)
    rows.face("a.jpg", None, 0, (640, 480), (1, 2, 3, 4), 0.9, 0.8, {"yaw": 1.0, "pitch": 2.0, "roll": 3.0},
              pts, np.array([0.5, 0.25, 1.0], np.float32), None)
    rows.failure("b.jpg", "no_face", "no face found", size=(320, 240))
    rows.face("c.jpg", 7, 1, (100, 100), (0, 0, 1, 1), None, None, None, pts * 2, None, None)
    rows.failure("d.jpg", "error", "boom")
    rows.truncate(3)  # forget d.jpg
    t = rows.table().to_pandas()
    assert t["source"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert t[["x0", "x1", "x2"]].iloc[0].tolist() == [1.5, 3.25, 5.0]
    assert t[["y0", "y1", "y2"]].iloc[2].tolist() == [5.0, 8.0, 12.25]
    assert t[["pc0", "pc1", "pc2"]].iloc[0].tolist() == [0.5, 0.25, 1.0]
    assert t.loc[1, ["x0", "y2", "pc1"]].isna().all() and t.loc[2, ["pc0", "pc2"]].isna().all()
    assert t.loc[1, "image_width"] == 320 and t.loc[2, "frame"] == 7 and t.loc[0, "yaw"] == 1.0
