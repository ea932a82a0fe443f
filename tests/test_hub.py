"""kpcore.models.hub against a stand-in Hub on 127.0.0.1 (tests/hub_server.py); no internet."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import constants
from safetensors.torch import save_file

from kpcore.errors import CheckpointError, HubError
from kpcore.models.hub import CARD_MARKER, model_card, pull, push, resolve_model_dir

from .hub_server import HubServer, SilentServer

REPO_ID = "alice/tiny-kp"
FAIL_FAST_S = 5.0

CONFIG = {
    "format": "kpcore-checkpoint", "format_version": 1,
    "model": {"name": "tinycnn", "kwargs": {"num_keypoints": 68, "in_channels": 1}},
    "num_keypoints": 68, "task": "ibug300w", "layout": "ibug300w",
    "input": {"width": 64, "height": 64, "color": "gray", "mean": [0.5], "std": [0.25]},
    "output": "normalized",
    "metrics": {"val_nme": 0.0512, "val_px_error": 3.21, "epoch": 7},
    "created": "2026-01-01T00:00:00Z", "kpcore_version": "0.1.0",
}
SUMMARY = {"n": 10, "nme": 0.0613, "mean_px_error": 3.9, "failure_rate": 0.1, "auc": 0.42,
           "per_keypoint_px": [1.0] * 68}


def make_checkpoint(folder: Path) -> Path:
    (folder / "eval" / "test").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=1))
    save_file({"head.weight": torch.arange(12, dtype=torch.float32).reshape(4, 3)},
              str(folder / "model.safetensors"))
    (folder / "eval" / "test" / "summary.json").write_text(json.dumps(SUMMARY))
    (folder / "notes.txt").write_text("not part of a checkpoint, not uploaded")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to prove a folder was left untouched."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Hub access allowed (conftest sets HF_HUB_OFFLINE=1), no token, caches in tmp."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def hub(online, monkeypatch):
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "run" / "best")


def test_push_then_pull_round_trip(hub, ckpt, tmp_path):
    before = snapshot(ckpt)
    url = push(ckpt, REPO_ID)
    assert url == f"{hub.url}/{REPO_ID}"
    assert snapshot(ckpt) == before  # no README.md written locally, nothing changed

    files = hub.hub.repos[REPO_ID][-1][1]
    assert sorted(files) == ["README.md", "config.json", "eval/test/summary.json", "model.safetensors"]

    folder = pull(REPO_ID, cache_dir=tmp_path / "other-cache")
    assert tmp_path / "other-cache" in folder.parents
    for name in ("config.json", "model.safetensors", "eval/test/summary.json"):
        assert (folder / name).read_bytes() == before[name]
    card = (folder / "README.md").read_text()
    assert "val_nme | 0.0512" in card and "| test | 10 | 0.0613" in card
    assert "non-commercial" in card


def test_push_again_updates_the_repo(hub, ckpt, tmp_path):
    push(ckpt, REPO_ID)
    config = json.loads((ckpt / "config.json").read_text())
    config["metrics"]["val_nme"] = 0.0499
    (ckpt / "config.json").write_text(json.dumps(config))
    push(ckpt, REPO_ID, commit_message="better model")  # repo exists: create_repo answers 409
    folder = pull(REPO_ID, cache_dir=tmp_path / "cache")
    assert "val_nme | 0.0499" in (folder / "README.md").read_text()


def test_push_without_hf_xet(hub, ckpt, tmp_path, monkeypatch):
    """huggingface_hub's single-commit upload path, taken when hf_xet is absent or disabled."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    push(ckpt, REPO_ID)
    folder = pull(REPO_ID, cache_dir=tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()


def test_hand_written_card_is_kept(hub, ckpt):
    (ckpt / "README.md").write_text("# My own card\n")
    push(ckpt, REPO_ID)
    assert hub.hub.repos[REPO_ID][-1][1]["README.md"] == b"# My own card\n"


def test_bad_token_raises_hub_error_and_keeps_files(hub, ckpt):
    before = snapshot(ckpt)
    with pytest.raises(HubError, match="401") as info:
        push(ckpt, REPO_ID, token="bad")
    assert "HF_TOKEN" in str(info.value) and "hf auth login" in str(info.value)
    assert snapshot(ckpt) == before
    assert REPO_ID not in hub.hub.repos


def test_unreachable_endpoint_fails_fast_and_keeps_files(online, ckpt):
    before = snapshot(ckpt)
    start = time.monotonic()
    with pytest.raises(HubError, match="network"):
        push(ckpt, REPO_ID, endpoint=closed_port_url())
    assert time.monotonic() - start < FAIL_FAST_S
    assert snapshot(ckpt) == before


def test_offline_mode(hub, ckpt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    push(ckpt, REPO_ID)
    pulled = pull(REPO_ID, cache_dir=cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert pull(REPO_ID, cache_dir=cache) == pulled  # served from the cache
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push(ckpt, REPO_ID)
    with pytest.raises(HubError, match="alice/never-pulled.*not in the Hugging Face cache"):
        pull("alice/never-pulled", cache_dir=cache)


def test_pull_unreachable_and_missing(hub, tmp_path):
    start = time.monotonic()
    with pytest.raises(HubError, match="alice/tiny-kp"):
        pull(REPO_ID, cache_dir=tmp_path / "c1", endpoint=closed_port_url())
    assert time.monotonic() - start < FAIL_FAST_S
    with pytest.raises(HubError, match="not found"):
        pull("alice/missing", cache_dir=tmp_path / "c2")


def test_push_rejects_a_folder_that_is_not_a_checkpoint(hub, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        push(tmp_path, REPO_ID)


def test_resolve_model_dir(hub, ckpt):
    assert resolve_model_dir(ckpt) == ckpt
    assert resolve_model_dir(str(ckpt)) == ckpt
    push(ckpt, REPO_ID)
    folder = resolve_model_dir(REPO_ID)
    assert (folder / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="no model 'no_such_model'.*shipped"):
        resolve_model_dir("no_such_model")
    with pytest.raises(HubError, match="local folder.*alice/absent"):
        resolve_model_dir("alice/absent")


def test_model_card_front_matter_and_licence():
    card = model_card({**CONFIG, "layout": "imm", "task": "imm"}, {"val": SUMMARY}, "bob/imm")
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "kpcore"
    assert {"keypoint-detection", "facial-landmarks"} <= set(meta["tags"])
    assert "education and research" in card and CARD_MARKER in card
    assert "| val | 10 | 0.0613 | 3.9 | 0.1 | 0.42 |" in card
    assert "per_keypoint_px" not in card
    assert "No metrics recorded yet." in model_card({"format": "kpcore-checkpoint"}, {})


def test_model_card_names_the_starting_weights():
    def start(model: dict) -> str:
        card = model_card({**CONFIG, "train_config": {"model": model, "optim": {"name": "adamw"}}}, {})
        return next(line for line in card.splitlines() if line.startswith("| starting weights"))

    assert "random initialisation" in start({"name": "resnet18"})
    assert "`IMAGENET1K_V1` weights" in start({"name": "mobilenetv2_heatmap", "pretrained": "IMAGENET1K_V1"})
    assert "fine-tuned from the checkpoint `checkpoints/face68-300w`" in start(
        {"name": "mobilenetv2_heatmap", "init_from": "checkpoints/face68-300w"})


SILENT_TIMEOUT_S = 1.0


def _in_thread(limit_s: float, fn, *args, **kwargs) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a daemon thread; ``(the exception it raised, seconds)``, or fail if it is still
    running after ``limit_s`` (so that a hang fails the test instead of stopping the suite)."""
    import threading

    raised: list[BaseException] = []

    def call() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            raised.append(err)

    start = time.monotonic()
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(limit_s)
    elapsed = time.monotonic() - start
    if worker.is_alive():
        pytest.fail(f"still waiting for the server after {elapsed:.0f} s")
    return (raised[0] if raised else None), elapsed


def test_push_to_a_server_that_never_answers_times_out_and_keeps_files(online, ckpt):
    """A server that accepts the connection and says nothing: huggingface_hub alone waits forever."""
    before = snapshot(ckpt)
    with SilentServer() as silent:
        err, elapsed = _in_thread(SILENT_TIMEOUT_S + FAIL_FAST_S, push, ckpt, REPO_ID, endpoint=silent.url,
                                  timeout=SILENT_TIMEOUT_S)
        assert silent.connections, "the push did reach the silent server"
    assert isinstance(err, HubError), repr(err)
    message = str(err)
    assert "did not answer within 1 s" in message and "HF_ENDPOINT" in message, message
    assert REPO_ID in message and "Local files were not changed" in message and "\n" not in message
    assert elapsed >= SILENT_TIMEOUT_S  # it did wait for an answer, then gave up
    assert snapshot(ckpt) == before


def test_pull_from_a_server_that_never_answers_times_out(online, tmp_path):
    with SilentServer() as silent:
        err, _ = _in_thread(SILENT_TIMEOUT_S + FAIL_FAST_S, pull, REPO_ID, cache_dir=tmp_path / "cache",
                            endpoint=silent.url, timeout=SILENT_TIMEOUT_S)
    assert isinstance(err, HubError) and "did not answer within 1 s" in str(err), repr(err)


def test_the_timeout_hook_is_removed_after_a_push(hub, ckpt):
    from huggingface_hub import get_session

    hooks = list(get_session().event_hooks["request"])
    push(ckpt, REPO_ID, timeout=SILENT_TIMEOUT_S)
    assert get_session().event_hooks["request"] == hooks
