"""The training engine: one code path for a CPU, one GPU or several (HF Accelerate).

``python -m kpcore train JOB.yaml`` -> :func:`train_from_job` -> :func:`train`.
Multi-GPU: ``accelerate launch --num_processes N -m kpcore train JOB.yaml``;
``optim.batch_size`` is the global batch, split over the processes.

A run folder (docs/FORMATS.md) holds ``config.yaml``, ``metrics.csv``,
``val_predictions.csv``, ``best/`` and ``last/``. Every epoch ends by writing,
atomically and in this order, ``best/`` (if the validation NME improved),
``last/`` (weights, optimiser, scheduler, epoch, history, RNG states) and
``metrics.csv`` (rewritten from the history in ``last/``). A run killed at any
moment resumes with ``--resume`` from ``last/``, losing at most the epoch in
progress; a kill in the middle of the swap of ``last/`` is repaired from the
copy it leaves (:func:`kpcore.models.checkpoint.recover_interrupted_save`).
``last/`` also holds the state of the generator that orders the training data
(and the Python, NumPy and torch RNGs), so a resumed run gives the weights of an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..console import progress_enabled
from ..data import geometry as geo
from ..data.datasets import get_task, load_split
from ..data.loader import KeypointDataset, MixedDataset
from ..errors import ConfigError
from ..evaluation.metrics import nme as nme_fn
from ..evaluation.metrics import px_error as px_fn
from ..models import create_model
from ..models.checkpoint import (
    atomic_write_text,
    build_config,
    load_weights,
    recover_interrupted_save,
    save_checkpoint,
)
from ..paths import RUNS_DIR
from .config import TrainConfig, load_job, save_yaml
from .losses import create_loss, pixel_scale

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_nme", "val_px_error", "lr", "seconds"]
STATE_FILE = "state.pt"


def _auto_workers() -> int:
    # Items come from an in-memory cache and cost ~1 ms; one worker keeps the
    # model fed without taking a core from it on small machines.
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 1 else min(4, cpus // 2)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    """Multiplier of the peak lr at each optimiser step: warm-up, then the schedule."""
    o = cfg.optim
    warm = max(int(round(o.warmup_epochs * steps_per_epoch)), 0)
    total = max(o.epochs * steps_per_epoch, 1)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if o.schedule == "constant":
            return 1.0
        if o.schedule == "step":
            return o.gamma ** (step // (o.step_epochs * steps_per_epoch))
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


@dataclass
class RunState:
    """What ``last/state.pt`` restores besides the weights."""

    epoch: int = 0  # epochs completed
    best_nme: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list | None = None


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 / AMX), where bf16 autocast is ~2x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "no"


def _rng_state(data_order: torch.Generator | None = None) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_order is not None:
        state["data_order"] = data_order.get_state()
    return state


def _set_rng_state(s: dict, data_order: torch.Generator | None = None) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    if data_order is not None and "data_order" in s:  # runs saved before it was kept restart the order
        data_order.set_state(s["data_order"])


def _saved_epoch(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "last" / "config.json").read_text())["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Repair an interrupted checkpoint swap (logged), refuse to overwrite a run unless asked, make the folder."""
    for name in ("last", "best"):
        copy = recover_interrupted_save(run_dir / name)
        if copy is not None:
            _log(run_dir, f"put back {name}/ from {copy.name}, which a save interrupted between its two renames "
                          f"left behind")
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / "last" / STATE_FILE).exists():
            raise ConfigError(f"--resume: {run_dir} has no last/{STATE_FILE} to continue from; "
                              f"start a new run without --resume")
        return
    if exists and not force:
        epoch = _saved_epoch(run_dir)
        held = f" and holds a checkpoint of epoch {epoch}" if epoch is not None else ""
        raise ConfigError(f"run folder {run_dir} already exists{held}; pass --resume to continue it or --force "
                          f"to overwrite it (or --out to choose another folder)")
    if exists and force:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def train_from_job(job: str | Path, data_root=None, out=None, epochs: int | None = None, resume: bool = False,
                   force: bool = False, overrides: list[str] | None = None) -> Path:
    """Load a job YAML (plus overrides) and train it; returns the run folder."""
    overrides = list(overrides or [])
    if epochs is not None:
        overrides.append(f"optim.epochs={int(epochs)}")
    cfg = load_job(job, overrides)
    if data_root is not None:
        cfg.data_root = str(data_root)
    run_dir = Path(out) if out else RUNS_DIR / cfg.name
    return train(cfg, run_dir, resume=resume, force=force)


def _make_loader(ds, batch, shuffle, workers, seed, drop_last=False, persistent=True):
    """A loader whose order (and workers' seeds) come from its own generator, ``loader.generator``.

    A loader that is not ``persistent`` starts its workers each epoch with seeds drawn
    from that generator, so that saving the generator's state is enough to resume the
    data order and the augmentation of an interrupted run exactly.
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers, generator=g,
                      persistent_workers=persistent and workers > 0, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available())


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, force: bool = False) -> Path:
    """Train ``cfg`` into ``run_dir``; see the module doc for what is written."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    cfg.validate()
    run_dir = Path(run_dir)
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg))
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run_dir, resume, force)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    if resume:  # the saved config wins, except for the number of epochs
        import yaml

        saved = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        saved.optim.epochs = cfg.optim.epochs
        saved.data_root = cfg.data_root or saved.data_root
        cfg = saved.validate()
    if main:
        save_yaml(cfg, run_dir / "config.yaml")

    task = get_task(cfg.task)
    facts = task.facts
    progress = progress_enabled() and main
    train_samples = load_split(cfg.task, "train", cfg.data_root)
    val_samples = load_split(cfg.task, "val", cfg.data_root)
    train_ds = KeypointDataset(train_samples, facts, cfg.input, cfg.augment, cache=cfg.cache, progress=progress,
                               seed=cfg.seed)
    val_ds = KeypointDataset(val_samples, facts, cfg.input, None, cache=cfg.cache, progress=progress)
    aux_loss = None
    if cfg.aux.task:
        from ..data.facts import five_point_matrix

        aux_task = get_task(cfg.aux.task)
        from ..data.datasets import load_pseudo_labels

        aux_samples = load_split(aux_task.name, "train", cfg.data_root)
        aux_ds = KeypointDataset(aux_samples, aux_task.facts, cfg.input,
                                 cfg.augment, cache=cfg.cache, progress=progress, seed=cfg.seed + 1)
        offset = aux_task.facts.extra.get(f"offset_{facts.name}")
        pseudo = load_pseudo_labels(cfg.aux.pseudo_labels, aux_samples, facts.num_points) \
            if cfg.aux.pseudo_labels else None
        train_ds = MixedDataset(train_ds, aux_ds, five_point_matrix(facts.name), cfg.aux.main_repeat, offset,
                                pseudo, cfg.aux.pseudo_weight)
        aux_loss = (create_loss("l1", scale=pixel_scale(cfg.input.size)), train_ds.aux_matrix, cfg.aux.weight)

    world = accelerator.num_processes
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size = {cfg.optim.batch_size} must divide evenly over {world} processes")
    per_device = cfg.optim.batch_size // world
    workers = _auto_workers() if cfg.num_workers < 0 else cfg.num_workers
    # a last partial batch can be of size 1, which BatchNorm cannot train on; shuffling
    # means every sample is still seen
    drop_last = len(train_ds) > cfg.optim.batch_size
    train_loader = _make_loader(train_ds, per_device, True, workers, cfg.seed, drop_last, persistent=False)
    data_order = train_loader.generator  # kept by accelerator.prepare; saved in last/
    val_loader = _make_loader(val_ds, per_device, False, workers, cfg.seed)

    model = build_model(cfg, facts.num_points)
    loss_fn = create_loss(cfg.loss.name, scale=pixel_scale(cfg.input.size), **cfg.loss.kwargs)
    if loss_fn.needs_heatmaps and not hasattr(model, "forward_heatmaps"):
        raise ConfigError(f"loss.name = {cfg.loss.name!r} needs heatmaps, but model {cfg.model.name!r} "
                          f"regresses coordinates; use a *_heatmap model or a coordinate loss (mse, l1, wing)")
    opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    # the loader is not sharded yet: after accelerator.prepare each process sees 1/world of its batches
    steps_per_epoch = math.ceil(len(train_loader) / world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))

    state = RunState(history=[])
    if resume:
        state = _load_last(run_dir, model, optimizer, scheduler, data_order)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model  # the bare model: what is saved
    if loss_fn.needs_heatmaps:
        model = _HeatmapOutputs(model)  # so DDP sees the heatmap forward
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)

    if main:
        n_params = sum(p.numel() for p in model.parameters())
        mix = f" ({len(train_ds.main)} x{cfg.aux.main_repeat} + {len(train_ds.aux)} {cfg.aux.task})" \
            if aux_loss else ""
        _log(run_dir, f"{'resuming at epoch ' + str(state.epoch + 1) if resume else 'training'} {cfg.name}: "
                      f"{cfg.model.name} ({n_params:,} params), {len(train_ds)} train{mix} / {len(val_ds)} val, "
                      f"input {cfg.input.width}x{cfg.input.height} {cfg.input.color}, device {accelerator.device}, "
                      f"{world} process(es), mixed precision {accelerator.mixed_precision}")

    for epoch in range(state.epoch + 1, cfg.optim.epochs + 1):
        t0 = time.time()
        model.train()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.optim.epochs}", disable=not progress, leave=False)
        for batch in bar:
            if cfg.channels_last:
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            with accelerator.autocast():
                loss = _compute_loss(model, loss_fn, batch, aux_loss)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            n = batch["image"].shape[0]
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{total / count:.4g}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        train_loss = accelerator.reduce(torch.tensor([total, count], device=accelerator.device), "sum")
        train_loss = (train_loss[0] / train_loss[1]).item()

        val = evaluate_loader(model, val_loader, val_ds, loss_fn, accelerator)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"], "val_nme": val["nme"],
               "val_px_error": val["px_error"], "lr": scheduler.get_last_lr()[0], "seconds": time.time() - t0}
        state.history.append(row)
        state.epoch = epoch
        improved = val["nme"] < state.best_nme
        if improved:
            state.best_nme, state.best_epoch, state.bad_epochs = val["nme"], epoch, 0
        else:
            state.bad_epochs += 1
        if main:
            if improved:
                _save_best(run_dir, net, cfg, facts, row, val, val_ds)
            _save_last(run_dir, net, optimizer, scheduler, state, cfg, facts, data_order)
            _write_metrics(run_dir, state.history)
            _log(run_dir, f"epoch {epoch}: train_loss {train_loss:.5g} val_loss {val['loss']:.5g} "
                          f"val_nme {val['nme']:.4f} val_px {val['px_error']:.2f} ({row['seconds']:.1f}s)"
                          f"{' *best*' if improved else ''}")
        accelerator.wait_for_everyone()
        if cfg.patience and state.bad_epochs >= cfg.patience:
            if main:
                _log(run_dir, f"early stop: no better val_nme for {cfg.patience} epochs "
                              f"(best {state.best_nme:.4f} at epoch {state.best_epoch})")
            break
    accelerator.end_training()
    return run_dir


def build_model(cfg: TrainConfig, num_keypoints: int) -> torch.nn.Module:
    """The job's model; models that size themselves get ``input_size`` from the input spec,
    and ``model.pretrained`` goes to models that take a ``pretrained`` option."""
    from ..models import model_accepts

    kwargs = dict(cfg.model.kwargs)
    if model_accepts(cfg.model.name, "input_size") and "input_size" not in kwargs:
        kwargs["input_size"] = [cfg.input.width, cfg.input.height]
    if cfg.model.pretrained:
        if not model_accepts(cfg.model.name, "pretrained"):
            raise ConfigError(f"model.pretrained = {cfg.model.pretrained!r}: model {cfg.model.name!r} takes no "
                              f"pretrained weights; leave it out or use e.g. mobilenetv2_heatmap")
        kwargs["pretrained"] = cfg.model.pretrained
    model = create_model(cfg.model.name, num_keypoints=num_keypoints, in_channels=cfg.input.channels, **kwargs)
    if cfg.model.init_from:
        init_weights_from(model, cfg.model.name, cfg.model.init_from)
    return model


def init_weights_from(model: torch.nn.Module, name: str, folder: str | Path) -> None:
    """Copy a checkpoint's weights into ``model`` (``model.init_from``), in the model's dtypes."""
    from ..models.checkpoint import CONFIG_FILE, load_checkpoint

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"model.init_from = {str(folder)!r} is not a checkpoint folder (no config.json); "
                          f"give a folder such as checkpoints/face68-300w or runs/NAME/best")
    source, source_cfg = load_checkpoint(folder)
    if source_cfg["model"]["name"] != name:
        raise ConfigError(f"model.init_from = {str(folder)!r} holds a {source_cfg['model']['name']!r} model, "
                          f"this job builds {name!r}; start from a checkpoint of the same architecture")
    ref = model.state_dict()
    state = source.state_dict()
    mismatch = sorted(k for k in ref if k not in state or state[k].shape != ref[k].shape)
    if mismatch:
        raise ConfigError(f"model.init_from = {str(folder)!r} does not fit this job's model "
                          f"({len(mismatch)} tensors differ, e.g. {mismatch[:3]}); check model.kwargs and the task")
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items() if k in ref}, strict=True)


class _HeatmapOutputs(torch.nn.Module):
    """Training-time view of a heatmap model whose forward returns ``(coords, heatmaps)``.

    Under DistributedDataParallel the loss must come from the wrapper's forward
    for gradients to be synchronised, so the heatmap path is made the forward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, heatmaps: bool = True):
        return self.model.forward_heatmaps(x) if heatmaps else self.model(x)


def _compute_loss(model, loss_fn, batch, aux_loss=None):
    """The main loss on the fully labelled faces, plus (for a mixed batch) the weighted
    auxiliary loss on the mapped points of the partly labelled ones."""
    mask = batch.get("mask")
    if loss_fn.needs_heatmaps:
        coords, heatmaps = model(batch["image"])
        coords = coords.float()
        value = loss_fn(coords, batch["target"], mask, heatmaps=heatmaps.float())
    else:
        coords = model(batch["image"]).float()
        value = loss_fn(coords, batch["target"], mask)
    if aux_loss is not None:
        fn, matrix, weight = aux_loss
        mapped = torch.einsum("ak,bkc->bac", matrix.to(coords.device), coords)
        value = value + weight * fn(mapped, batch["aux_target"], batch["aux_mask"])
    return value


@torch.no_grad()
def evaluate_loader(model, loader, ds: KeypointDataset, loss_fn, accelerator=None) -> dict:
    """Predictions on a (non-augmented) loader mapped back to original pixels, with metrics."""
    model.eval()
    preds, idxs, losses, ns = [], [], [], []
    for batch in loader:
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            out = model(batch["image"], heatmaps=False) if loss_fn.needs_heatmaps else model(batch["image"])
        out = out.float()
        loss = loss_fn(out, batch["target"]) if not loss_fn.needs_heatmaps else \
            torch.nn.functional.l1_loss(out, batch["target"])
        n = torch.tensor(batch["image"].shape[0], device=out.device)
        if accelerator is not None:
            out, index = accelerator.gather_for_metrics((out, batch["index"]))
            loss_n = accelerator.gather_for_metrics((loss.detach()[None] * n, n[None]))
        else:
            index, loss_n = batch["index"], (loss.detach()[None] * n, n[None])
        preds.append(out.cpu().numpy())
        idxs.append(index.cpu().numpy())
        losses.append(loss_n[0].sum().item())
        ns.append(loss_n[1].sum().item())
    coords = np.concatenate(preds)
    index = np.concatenate(idxs)
    pred_px = np.stack([map_back(ds, int(i), c) for i, c in zip(index, coords, strict=True)])
    true = np.stack([ds.samples[int(i)].points for i in index])
    norm = np.array([ds.samples[int(i)].norm_distance for i in index])
    per_nme = nme_fn(pred_px, true, norm)
    per_px = px_fn(pred_px, true)
    return {"loss": float(sum(losses) / max(sum(ns), 1)), "nme": float(per_nme.mean()),
            "px_error": float(per_px.mean()), "index": index, "pred": pred_px, "per_nme": per_nme,
            "per_px": per_px}


def map_back(ds: KeypointDataset, index: int, coords: np.ndarray) -> np.ndarray:
    """Normalised model output of item ``index`` -> original-image pixels."""
    return geo.uncrop(coords, ds.crop_matrix(index), ds.spec.size).astype(np.float32)


def predictions_frame(ds: KeypointDataset, val: dict) -> pd.DataFrame:
    """Per-image rows: image, nme, px_error, pred, true (JSON point lists)."""
    rows = []
    for i, pred, n, p in zip(val["index"], val["pred"], val["per_nme"], val["per_px"], strict=True):
        s = ds.samples[int(i)]
        rows.append({"image": s.image_id, "nme": float(n), "px_error": float(p),
                     "pred": json.dumps(np.round(pred, 2).tolist()),
                     "true": json.dumps(np.round(s.points, 2).tolist())})
    return pd.DataFrame(rows)


def _checkpoint_config(model, cfg: TrainConfig, facts, metrics: dict) -> dict:
    return build_config(model, task=cfg.task, layout=facts.name, flip_pairs=facts.flip_pairs,
                        input_spec=cfg.input.to_dict(), metrics=metrics, train_config=cfg.to_dict())


def _save_best(run_dir: Path, model, cfg, facts, row: dict, val: dict, ds) -> None:
    metrics = {"val_nme": row["val_nme"], "val_px_error": row["val_px_error"], "val_loss": row["val_loss"],
               "epoch": row["epoch"]}
    save_checkpoint(run_dir / "best", model, _checkpoint_config(model, cfg, facts, metrics))
    atomic_write_text(run_dir / "val_predictions.csv", predictions_frame(ds, val).to_csv(index=False))


def _save_last(run_dir: Path, model, optimizer, scheduler, state: RunState, cfg, facts,
               data_order: torch.Generator | None = None) -> None:
    buf = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "run": state.__dict__, "rng": _rng_state(data_order)}, buf)
    metrics = {"epoch": state.epoch, "best_val_nme": state.best_nme}
    save_checkpoint(run_dir / "last", model, _checkpoint_config(model, cfg, facts, metrics),
                    extra_files={STATE_FILE: buf.getvalue()})


def _load_last(run_dir: Path, model, optimizer, scheduler, data_order: torch.Generator | None = None) -> RunState:
    """Restore weights, optimiser, scheduler, RNGs (and the data order's generator) from ``last/``."""
    from ..errors import CheckpointError

    last = run_dir / "last"
    model.load_state_dict(load_weights(last / "model.safetensors"))
    try:
        blob = torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # truncated or not a torch file
        raise CheckpointError(f"{last / STATE_FILE} cannot be read ({str(e)[:200]}); resume from another copy "
                              f"of the run, or start again with --force") from e
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    _set_rng_state(blob["rng"], data_order)
    return RunState(**blob["run"])


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "metrics.csv", pd.DataFrame(history, columns=METRIC_COLUMNS).to_csv(index=False))


def _log(run_dir: Path, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    line = f"[{stamp}] {message}"
    print(line, flush=True)
    with open(run_dir / "train.log", "a") as f:
        f.write(line + "\n")


__all__ = ["train", "train_from_job", "evaluate_loader", "map_back", "predictions_frame"]
