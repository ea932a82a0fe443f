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
