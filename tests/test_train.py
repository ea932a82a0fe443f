"""The training engine: configs, run folders, resume, distributed agreement."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from kpcore.errors import ConfigError
from kpcore.training.config import TrainConfig, load_job

from .conftest import REPO
from .fixtures import make_tiny_imm

JOB = {
    "name": "tiny",
    "task": "imm_nose",
    "input": {"width": 80, "height": 60, "color": "gray", "crop_mode": "whole"},
    "augment": {"enabled": False},
    "model": {"name": "nosenet", "kwargs": {"kernel_size": 3, "channels": [4, 8, 8], "hidden": 16}},
    "loss": {"name": "mse"},
    "optim": {"name": "adam", "lr": 1e-3, "batch_size": 8, "epochs": 2, "warmup_epochs": 0},
    "num_workers": 0,
    "mixed_precision": "no",  # exact agreement checks below need float32
}


@pytest.fixture
def tiny(tmp_path):
    data = tmp_path / "data"
    make_tiny_imm(data)
    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump(JOB))
    return data, job


def run_cli(*args, env_extra=None, check=True, **kw):
    env = {**os.environ, "KPCORE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "kpcore", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=check, **kw)


@pytest.mark.parametrize("override, field", [
    ("optim.lr=-1", "optim.lr"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("optim.schedule=linear", "optim.schedule"),
    ("augment.flip=2", "augment.flip"),
    ("input.color=cmyk", "input.color"),
    ("task=mnist", "task"),
    ("model.name=vgg99", "model.name"),
    ("optim.learning_rate=1", "learning_rate"),
])
def test_config_validation_names_the_field(tiny, override, field):
    _, job = tiny
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_job(job, [override])


def test_task_defaults_fill_the_input():
    cfg = TrainConfig.from_dict({"task": "imm_nose", "model": {"name": "nosenet"}})
    assert (cfg.input.width, cfg.input.height, cfg.input.crop_mode) == (80, 60, "whole")


def test_train_then_resume_round_trips_weights_optimizer_and_epoch(tiny, tmp_path):
    from kpcore.training.train import RunState, _load_last, build_model

    data, job = tiny
    out = tmp_path / "run"
    run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "1")
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    # load last/ into a fresh model + optimizer: everything comes back
    cfg = load_job(job)
    model = build_model(cfg, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = _load_last(out, model, opt, sched)
    assert isinstance(state, RunState) and state.epoch == 1 and len(state.history) == 1
    saved = load_file(str(out / "last" / "model.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert opt.state_dict()["state"], "optimizer moments were restored"
    assert int(opt.state_dict()["state"][0]["step"]) > 0

    run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "2", "--resume")
    m = pd.read_csv(out / "metrics.csv")
    assert m["epoch"].tolist() == [1, 2]
    assert list(m.columns) == ["epoch", "train_loss", "val_loss", "val_nme", "val_px_error", "lr", "seconds"]
    assert (out / "best" / "config.json").exists() and (out / "best" / "model.safetensors").exists()
    preds = pd.read_csv(out / "val_predictions.csv")
    assert len(preds) == 8 and {"image", "nme", "px_error", "pred", "true"} <= set(preds.columns)


def test_existing_run_is_not_overwritten(tiny, tmp_path):
    data, job = tiny
    out = tmp_path / "run"
    run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "1")
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "1", check=False)
    assert r.returncode == 2 and "--resume" in r.stderr and "--force" in r.stderr
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "1", "--force")
    assert r.returncode == 0
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(tmp_path / "new"), "--resume",
                check=False)
    assert r.returncode == 2 and "no last/state.pt" in r.stderr


@pytest.mark.slow
def test_resume_after_sigkill_loses_at_most_one_epoch(tiny, tmp_path):
    data, job = tiny
    out = tmp_path / "run"
    env = {**os.environ, "KPCORE_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kpcore", "train", str(job), "--data-root", str(data),
                             "--out", str(out), "--epochs", "200"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "metrics.csv").exists() and len(pd.read_csv(out / "metrics.csv")) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("training did not finish two epochs in time")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(pd.read_csv(out / "metrics.csv"))
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", str(done + 2),
                "--resume")
    m = pd.read_csv(out / "metrics.csv")
    assert m["epoch"].tolist() == list(range(1, done + 3)), r.stdout


@pytest.mark.slow
def test_two_process_accelerate_run_agrees_with_one_process(tiny, tmp_path):
    """Two CPU processes (gloo) through Accelerate give the one-process result.

    ``accelerate launch --cpu`` always starts a single process (multi-CPU needs
    MPI there), so the processes come from torchrun; ``ACCELERATE_USE_CPU=1``
    makes Accelerate join them as MULTI_CPU.
    """
    data, job = tiny
    single = tmp_path / "single"
    run_cli("train", str(job), "--data-root", str(data), "--out", str(single), "--epochs", "2",
            "--set", "optim.lr=1e-4")
    double = tmp_path / "double"
    env = {**os.environ, "KPCORE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                        "--master_port", str(port), "-m", "kpcore", "train", str(job), "--data-root", str(data),
                        "--out", str(double), "--epochs", "2", "--set", "optim.lr=1e-4"],
                       cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=300)
    assert "2 process(es)" in r.stdout, r.stdout[-2000:]
    a = load_file(str(single / "last" / "model.safetensors"))
    b = load_file(str(double / "last" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ma, mb = pd.read_csv(single / "metrics.csv"), pd.read_csv(double / "metrics.csv")
    np.testing.assert_allclose(ma["val_nme"], mb["val_nme"], rtol=1e-4)
    np.testing.assert_allclose(ma["lr"], mb["lr"], rtol=1e-9)  # same schedule: sized per process


def test_init_from_starts_training_from_a_checkpoint_s_weights(tmp_path):
    """model.init_from (fine-tuning): the job's model starts with the checkpoint's weights, and a
    checkpoint of another architecture or shape is refused with the reason."""
    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint
    from kpcore.training.train import build_model

    cfg = TrainConfig.from_dict(JOB).validate()
    torch.manual_seed(1)
    source = create_model("nosenet", num_keypoints=1, in_channels=1, input_size=[80, 60],
                          **JOB["model"]["kwargs"])
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, source, build_config(source, task="imm_nose", layout="imm", flip_pairs=[],
                                                 input_spec=cfg.input.to_dict()))
    cfg.model.init_from = str(folder)
    torch.manual_seed(2)  # a different random start: only the copy can make them equal
    model = build_model(cfg, num_keypoints=1)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)

    wider = TrainConfig.from_dict({**JOB, "model": {**JOB["model"], "kwargs": {**JOB["model"]["kwargs"],
                                                                                "hidden": 32}}}).validate()
    wider.model.init_from = str(folder)
    with pytest.raises(ConfigError, match="does not fit this job's model"):
        build_model(wider, num_keypoints=1)
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        cfg.model.init_from = str(tmp_path)
        build_model(cfg, num_keypoints=1)


# -- faults: a kill in the checkpoint swap, a full disk, damaged files, resume = uninterrupted ---------------


def _dead_pid() -> int:
    """The id of a process that has exited (as a crashed trainer's would be)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def _tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    from kpcore.models import create_model
    from kpcore.models.checkpoint import build_config, save_checkpoint

    cfg = TrainConfig.from_dict(JOB).validate()
    torch.manual_seed(seed)
    model = create_model("nosenet", num_keypoints=1, in_channels=1, input_size=[80, 60], **JOB["model"]["kwargs"])
    return save_checkpoint(folder, model, build_config(model, task="imm_nose", layout="imm_nose", flip_pairs=[],
                                                       input_spec=cfg.input.to_dict()))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_recover_puts_back_the_copy_a_kill_between_the_renames_left(tmp_path):
    """A kill after ``last -> .last.old-PID`` and before ``tmp -> last`` leaves no last/: the intact copy
    comes back, and leftovers of dead writers go; those of a live writer stay."""
    from kpcore.models.checkpoint import recover_interrupted_save

    last = _tiny_checkpoint(tmp_path / "last")
    before = _files(last)
    dead = _dead_pid()
    os.replace(last, tmp_path / f".last.old-{dead}")
    (tmp_path / f".last.tmp-{dead}-abc").mkdir()  # the new copy, complete or not: never trusted
    (tmp_path / f".last.tmp-{dead}-abc" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".last.tmp-old_style").mkdir()  # a name from before the pid was in it
    live = tmp_path / f".last.tmp-{os.getpid()}-live"  # someone writing right now
    live.mkdir()

    assert recover_interrupted_save(tmp_path / "last") == tmp_path / f".last.old-{dead}"
    assert _files(tmp_path / "last") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "last"]
    assert recover_interrupted_save(tmp_path / "last") is None  # nothing more to do


def test_a_save_cleans_leftovers_of_dead_writers(tmp_path):
    last = _tiny_checkpoint(tmp_path / "last")
    dead = _dead_pid()
    for name in (f".last.tmp-{dead}-x", f".last.old-{dead}"):
        (tmp_path / name).mkdir()
    _tiny_checkpoint(last, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


CRASH_IN_SWAP = """
import os, sys
from pathlib import Path
from kpcore.cli import main
real_replace = os.replace

def replace(src, dst):  # die like a SIGKILL between the two renames of last/'s swap
    src, dst = Path(src), Path(dst)
    if dst.name == "last" and src.name.startswith(".last.tmp-") and (dst.parent / f".last.old-{os.getpid()}").exists():
        os._exit(137)
    real_replace(src, dst)

os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_in_the_swap_of_last_is_resumed_from_the_copy(tiny, tmp_path):
    """End to end: a trainer killed between the two renames of epoch 2's last/ swap leaves no last/;
    without --resume the run is refused with its epoch named, --resume continues from epoch 1's copy,
    and the leftovers are removed."""
    data, job = tiny
    out = tmp_path / "run"
    env = {**os.environ, "KPCORE_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", CRASH_IN_SWAP, "train", str(job), "--data-root", str(data),
                        "--out", str(out), "--epochs", "3"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 137, r.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert "last" not in names and any(n.startswith(".last.old-") for n in names)
    assert any(n.startswith(".last.tmp-") for n in names)

    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "3", check=False)
    assert r.returncode == 2 and "holds a checkpoint of epoch 1" in r.stderr and "--resume" in r.stderr
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "3", "--resume")
    assert "resuming at epoch 2" in r.stdout and "put back last/" in (out / "train.log").read_text()
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert not [p.name for p in out.iterdir() if p.name.startswith((".last.", ".best."))]


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path, workers, monkeypatch):
    """A 2-epoch run stopped after epoch 1 and resumed gives the weights and losses of one that ran
    straight through (augmentation on, so the data order, the workers' seeds and the augmentation RNG
    must all come back)."""
    from kpcore.training import train as engine

    data, _ = tiny
    job = {**JOB, "augment": {"enabled": True}, "num_workers": workers, "data_root": str(data)}
    engine.train(TrainConfig.from_dict(job), tmp_path / "straight")

    log = engine._log

    def stop_after_epoch_1(run_dir, message):  # the run is killed once epoch 1 is saved
        log(run_dir, message)
        if message.startswith("epoch 1:"):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_log", stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        engine.train(TrainConfig.from_dict(job), tmp_path / "split")
    monkeypatch.setattr(engine, "_log", log)
    engine.train(TrainConfig.from_dict(job), tmp_path / "split", resume=True)

    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma, mb = pd.read_csv(tmp_path / "straight" / "metrics.csv"), pd.read_csv(tmp_path / "split" / "metrics.csv")
    cols = ["epoch", "train_loss", "val_loss", "val_nme", "lr"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols], check_exact=True)


def test_full_disk_during_a_checkpoint_is_one_clear_error_and_keeps_the_last_one(tiny, tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    from kpcore.errors import CheckpointError
    from kpcore.training.train import train

    data, _ = tiny
    job = {**JOB, "data_root": str(data), "optim": {**JOB["optim"], "epochs": 1}}
    out = tmp_path / "run"
    train(TrainConfig.from_dict(job), out)
    before = _files(out / "last")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(CheckpointError, match=r"disk is full .*MiB free.*previous checkpoint there is unchanged"
                                              r".*Free some space") as info:
        train(TrainConfig.from_dict({**job, "optim": {**JOB["optim"], "epochs": 2}}), out, resume=True)
    assert str(out / "best") in str(info.value) or str(out / "last") in str(info.value)
    assert _files(out / "last") == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no half-written folders


def test_safetensors_error_for_a_full_disk_is_named(tmp_path, monkeypatch):
    """The writer is Rust: a full disk reaches Python as a SafetensorError, not an OSError."""
    import safetensors.torch
    from safetensors import SafetensorError

    from kpcore.errors import CheckpointError

    last = _tiny_checkpoint(tmp_path / "last")
    before = _files(last)

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(CheckpointError, match="the disk is full"):
        _tiny_checkpoint(last, seed=1)
    assert _files(last) == before


def test_truncated_weights_are_one_clear_error(tmp_path):
    from kpcore.errors import CheckpointError
    from kpcore.models.checkpoint import load_checkpoint

    folder = _tiny_checkpoint(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors cannot be read: it is truncated or damaged"
                                              r".*export it again"):
        load_checkpoint(folder)


def test_truncated_last_state_is_one_clear_error_on_resume(tiny, tmp_path):
    data, job = tiny
    out = tmp_path / "run"
    run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "1")
    state = out / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    r = run_cli("train", str(job), "--data-root", str(data), "--out", str(out), "--epochs", "2", "--resume",
                check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "state.pt cannot be read" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("field, value, message", [
    ("num_keypoints", "1", "num_keypoints = '1' is invalid"),
    ("layout", "nope", "layout = 'nope' is invalid"),
    ("flip_pairs", [[0, 5]], "flip_pairs"),
    ("model", None, "model = None is invalid"),
    ("input", {"width": -1, "height": 60, "color": "gray"}, "input .* is invalid .*8..2048"),
    ("input", {"width": "wide", "height": 60, "color": "gray"}, "input .* is invalid"),
    ("model", {"name": "vgg99", "kwargs": {"num_keypoints": 1}}, "model 'vgg99' .* cannot be built .*known"),
    ("model", {"name": "nosenet", "kwargs": {"num_keypoints": 1, "depth": 3}}, "cannot be built .*depth"),
])
def test_bad_config_fields_are_one_clear_error(tmp_path, field, value, message):
    import json

    from kpcore.errors import CheckpointError
    from kpcore.models.checkpoint import load_checkpoint

    folder = _tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(folder)
    assert "config.json" in str(info.value) and "export it again" in str(info.value)
