"""The command line with bad input: one ``error:`` line that names the problem and the fix, a non-zero
exit, no traceback, and never an empty result reported as success (issue 19)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kpcore import cli
from kpcore.live.track import VideoWriter

from .fixtures import make_tiny_imm


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``kpcore ARGV`` in this process: (exit status, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc: int, err: str, *words: str) -> None:
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def write_video(path: Path, frames: int = 6) -> Path:
    """A short grey clip without a face (H.264 with the index first when ffmpeg is there, else MPEG-4)."""
    with VideoWriter(path, 10.0, (96, 64)) as writer:
        for i in range(frames):
            writer.write(np.full((64, 96, 3), 40 + 5 * i, np.uint8))
    return path


# -- track ---------------------------------------------------------------------------


def test_track_on_a_missing_file(capsys, tmp_path):
    rc, out, err = run(capsys, "track", tmp_path / "none.mp4", "--csv", tmp_path / "p.csv")
    assert_one_error_line(rc, err, "none.mp4", "does not exist", "check the path")
    assert out == "" and not (tmp_path / "p.csv").exists()


def test_track_on_a_text_file_named_mp4(capsys, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    rc, out, err = run(capsys, "track", text, "--csv", tmp_path / "p.csv")
    assert_one_error_line(rc, err, "notes.mp4", "cannot open", "ffmpeg -i notes.mp4")
    assert "frames" not in out and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("keep", ["a fifth", "the header"])
def test_track_on_a_truncated_video(capsys, tmp_path, keep):
    """A clip cut short: with its index gone OpenCV cannot open it; with its index (moov) kept but its
    frames (mdat) gone it opens and no frame decodes. Either way one error, never '0 frames' with exit 0."""
    data = write_video(tmp_path / "clip.mp4", frames=30).read_bytes()
    if keep == "the header":
        moov, mdat = data.find(b"moov"), data.find(b"mdat")
        if not 0 <= moov < mdat:
            pytest.skip("needs an MP4 with its index first (written through ffmpeg's +faststart)")
        data = data[: mdat + 16]
    else:
        data = data[: len(data) // 5]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data)
    rc, out, err = run(capsys, "track", cut, "--csv", tmp_path / "p.csv")
    assert_one_error_line(rc, err, "cut.mp4", "cannot decode any frame" if keep == "the header" else "cannot open")
    assert "0 frames" not in out and not (tmp_path / "p.csv").exists()


def test_track_without_any_face_is_not_a_success(capsys, tmp_path, monkeypatch):
    """A video in which no face was ever found: an error, not '30 frames, 0 face(s)'."""
    import kpcore.live.predict as predict
    import kpcore.live.track as track

    clip = write_video(tmp_path / "grey.mp4")
    monkeypatch.setattr(predict.Predictor, "from_pretrained", classmethod(lambda cls, *a, **k: object()))

    def no_faces(video, csv_out, *args, **kwargs):
        Path(csv_out).write_text("frame,face,point,x,y\n")
        return {"frames": 6, "faces": 0, "detector_runs": 6, "seconds": 0.1, "fps": 60.0, "csv": str(csv_out)}

    monkeypatch.setattr(track, "track_video", no_faces)
    rc, out, err = run(capsys, "track", clip, "--csv", tmp_path / "p.csv")
    assert_one_error_line(rc, err, "no face found in any of the 6 frames", "has only its header")
    assert out == ""


def test_track_help_says_csv_is_required(capsys):
    with pytest.raises(SystemExit):
        cli.main(["track", "--help"])
    assert "required: write frame,face,point,x,y rows here" in " ".join(capsys.readouterr().out.split())


def test_track_rejects_bad_numbers_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["track", str(tmp_path / "v.mp4"), "--csv", "p.csv", "--detect-every", "-1"])
    assert info.value.code == 2 and "give 0 or more" in capsys.readouterr().err
    rc, _, err = run(capsys, "track", write_video(tmp_path / "v.mp4"), "--csv", tmp_path / "p.csv",
                     "--min-cutoff", "-1")
    assert_one_error_line(rc, err, "min_cutoff > 0")


# -- evaluate ------------------------------------------------------------------------


def test_evaluate_dlib_without_dlib(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    rc, out, err = run(capsys, "evaluate", "dlib")
    assert_one_error_line(rc, err, "pip install dlib-bin", "libdlib-data")
    assert out == ""


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A model folder under a stand-in checkpoints/ (with records that ship), a data root, a runs/ folder."""
    import kpcore.evaluation.evaluate as evaluate
    import kpcore.paths as paths
    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint

    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    monkeypatch.setattr(evaluate, "CHECKPOINTS_DIR", checkpoints)
    monkeypatch.setattr(evaluate, "RUNS_DIR", runs)
    monkeypatch.setattr(paths, "RUNS_DIR", runs)
    model = create_model("nosenet", num_keypoints=1, in_channels=1, input_size=[80, 60],
                         kernel_size=3, channels=[4, 8, 8], hidden=16)
    spec = {"width": 80, "height": 60, "color": "gray", "mean": [0.5], "std": [0.25], "crop_mode": "whole",
            "enlarge": 1.0}
    folder = save_checkpoint(checkpoints / "nose-tiny", model, build_config(
        model, task="imm_nose", layout="imm_nose", flip_pairs=[], input_spec=spec))
    record = folder / "eval" / "val" / "summary.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"nme": 0.03, "shipped": true}')
    data = tmp_path / "data"
    make_tiny_imm(data)
    return folder, record, data, runs


def test_evaluate_keeps_a_shipped_model_s_records(capsys, shipped):
    folder, record, data, runs = shipped
    rc, out, err = run(capsys, "evaluate", folder, "--data-root", data)
    assert rc == 0, err
    assert json.loads(record.read_text()) == {"nme": 0.03, "shipped": True}
    written = runs / "eval" / "nose-tiny" / "val" / "summary.json"
    assert json.loads(written.read_text())["n"] == 8
    assert f"wrote {written.parent}" in out and "were kept; --overwrite replaces them" in out


def test_evaluate_overwrite_replaces_them_when_asked(capsys, shipped):
    folder, record, data, runs = shipped
    rc, out, err = run(capsys, "evaluate", folder, "--data-root", data, "--overwrite")
    assert rc == 0, err
    assert json.loads(record.read_text())["n"] == 8 and not (runs / "eval").exists()


def test_evaluate_help_documents_where_results_go(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "runs/eval/<model>/<split>/" in help_text and "--overwrite" in help_text


# -- push ----------------------------------------------------------------------------


def test_push_to_a_server_that_never_answers(capsys, shipped, monkeypatch, tmp_path):
    from huggingface_hub import constants

    from .hub_server import SilentServer

    folder = shipped[0]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with SilentServer() as silent:
        monkeypatch.setenv("HF_ENDPOINT", silent.url)
        rc, out, err = run(capsys, "push", folder, "alice/tiny", "--timeout", "1")
    assert_one_error_line(rc, err, "did not answer within 1 s", "Local files were not changed")
    assert out == ""


# -- every command: one line -----------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "{tmp}/none"], ["no model", "Pass a checkpoint folder"]),
    (["calibrate", "{tmp}/none"], ["not a kpcore checkpoint"]),
    (["export", "{tmp}/none"], ["not a run folder", "kpcore train"]),
    (["push", "{tmp}/none", "alice/x"], ["not a directory"]),
    (["train", "{tmp}/none.yaml"], ["not found", "train_jobs"]),
    (["train", "{tmp}/list.yaml"], ["YAML mapping", "train_jobs/nose_imm.yaml"]),
    (["bench", "--sections", "bogus"], ["unknown --sections"]),
])
def test_bad_input_is_one_error_line(capsys, tmp_path, argv, words):
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(["task", "model"]))
    rc, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert_one_error_line(rc, err, *words)
    assert out == ""


def test_os_errors_and_bugs_are_one_line_too(capsys, monkeypatch):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.csv")

    monkeypatch.setattr(cli, "_cmd_models", full)
    rc, _, err = run(capsys, "models")
    assert_one_error_line(rc, err, "disk is full", "/runs/x/metrics.csv", "free some space")

    def bug(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "_cmd_models", bug)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    rc, _, err = run(capsys, "models")
    assert rc == 1
    assert_one_error_line(rc, err, "failed unexpectedly (KeyError", f"{cli.DEBUG_ENV}=1")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError):
        cli.main(["models"])
