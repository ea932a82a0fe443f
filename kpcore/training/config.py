"""Typed training configs. Job files in ``train_jobs/`` only fill these in.

A job YAML mirrors :class:`TrainConfig`::

    name: nose_imm
    task: imm_nose
    input: {width: 80, height: 60, color: gray}
    model: {name: nosenet, kwargs: {kernel_size: 5}}
    loss: {name: mse}
    optim: {lr: 1.0e-3, batch_size: 16, epochs: 25}

Unknown keys are errors that name the key and list the accepted ones;
:meth:`TrainConfig.validate` names the bad value and the fix. The resolved
config is saved as ``config.yaml`` in the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.datasets import TASKS
from ..data.loader import InputSpec
from ..data.transforms import AugmentConfig
from ..errors import ConfigError
from ..paths import TRAIN_JOBS_DIR


@dataclass
class ModelConfig:
    """Which registered model to build.

    Attributes:
        name: Registry name (``python -m kpcore models`` lists them).
        kwargs: Architecture options passed to ``create_model`` (num_keypoints
            and in_channels are filled in from the task and input).
        pretrained: Starting weights of the trunk, for models that take them: a
            torchvision weights name such as ``IMAGENET1K_V1`` (loaded through
            torchvision's weights API, from ``$TORCH_HOME`` or downloaded), or
            None for random initialisation.
        init_from: A kpcore checkpoint folder (a shipped model or a run's
            ``best/``) whose weights start this training: fine-tuning. It must
            hold the same architecture (``name`` and ``kwargs``); ``--resume``
            still restores the run's own last state instead.
    """

    name: str = "resnet18"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    init_from: str | None = None


@dataclass
class AuxDataConfig:
    """Partly labelled faces mixed into training (e.g. MTFL's five points for a 68-point model).

    The model's points are mapped to the auxiliary layout (for MTFL: eye centres =
    means of 36-41 and 42-47, nose 30, mouth corners 48 and 54;
    ``kpcore.data.facts.five_point_matrix``) and a coordinate L1 loss (in input pixels)
    is taken there; the main loss sees only the main task's faces.

    Attributes:
        task: Task of the extra faces (``mtfl``), or ``""`` for none.
        weight: Weight of their loss relative to the main loss.
        main_repeat: How many times the main training set is seen per epoch, to keep
            the share of fully labelled faces up when the extra set is large.
        pseudo_labels: A Parquet file of machine-made main-layout labels for the extra
            faces (``scripts/pseudo_label_mtfl.py``), or ``""`` for none. A labelled face
            also takes the main loss, weighted by its row's weight; its true points
            keep their own loss, and the main task's labels are never replaced.
        pseudo_weight: Weight of the pseudo-labelled faces in the main loss relative
            to the truly labelled ones (times each face's own weight).
    """

    task: str = ""
    weight: float = 1.0
    main_repeat: int = 1
    pseudo_labels: str = ""
    pseudo_weight: float = 0.5


@dataclass
class LossConfig:
    """The training loss.

    Attributes:
        name: ``mse`` (the assignment's), ``l1``, ``smooth_l1``, ``wing``,
            ``adaptive_wing``, ``heatmap_mse``, ``integral`` (see kpcore.training.losses).
        kwargs: Options of that loss (e.g. ``sigma`` for heatmap losses).
    """

    name: str = "mse"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    Attributes:
        name: ``adamw`` or ``adam``.
        lr: Peak learning rate.
        weight_decay: Weight decay (decoupled for AdamW).
        batch_size: Global batch size (split over processes under ``accelerate launch``).
        epochs: Number of epochs.
        schedule: ``cosine`` (after warm-up), ``step`` or ``constant``.
        warmup_epochs: Linear warm-up length in epochs (may be fractional).
        step_epochs: For ``step``: multiply the lr by ``gamma`` every this many epochs.
        gamma: For ``step``: the factor.
        min_lr_ratio: For ``cosine``: final lr as a fraction of ``lr``.
        grad_clip: Clip the gradient norm to this (0 = off).
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 30
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    step_epochs: int = 10
    gamma: float = 0.5
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0


@dataclass
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        name: Run name (default run folder ``runs/<name>``).
        task: ``imm_nose``, ``imm_face`` or ``ibug300w``.
        input: How faces become inputs (size, colour, crop).
        augment: Random augmentation of training samples.
        model: The architecture.
        loss: The loss.
        optim: Optimiser and schedule.
        aux: Extra, partly labelled training faces (none by default).
        seed: Random seed (weights, shuffling, augmentation).
        patience: Early stopping: stop after this many epochs without a better
            validation NME (0 = never stop early).
        mixed_precision: ``auto`` (bf16 on a GPU or a CPU with native bf16, fp16
            on older GPUs, else off), ``no``, ``bf16`` or ``fp16``.
        channels_last: Use the channels-last memory format (faster convolutions
            on CPUs and tensor cores).
        num_workers: Data-loader worker processes (-1 = automatic).
        cache: Decode and crop every image once and keep it in memory.
        data_root: Where the datasets are (None: ``--data-root``/``$KPCORE_DATA``/``./data``).
        description: Free text shown in the dashboard.
    """

    name: str = "run"
    task: str = "ibug300w"
    input: InputSpec = field(default_factory=InputSpec)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    aux: AuxDataConfig = field(default_factory=AuxDataConfig)
    seed: int = 0
    patience: int = 0
    mixed_precision: str = "auto"
    channels_last: bool = True
    num_workers: int = -1
    cache: bool = True
    data_root: str | None = None
    description: str = ""

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` naming the first bad field and the fix; return self."""
        if self.task not in TASKS:
            raise ConfigError(f"task = {self.task!r} is unknown; use one of {sorted(TASKS)}")
        self.input.validate()
        self.augment.validate()
        from ..models import list_models
        from .losses import list_losses

        if self.model.name not in list_models():
            raise ConfigError(f"model.name = {self.model.name!r} is unknown; registered: {list_models()}")
        if self.loss.name not in list_losses():
            raise ConfigError(f"loss.name = {self.loss.name!r} is unknown; known: {list_losses()}")
        if self.aux.task:
            if self.aux.task not in TASKS:
                raise ConfigError(f"aux.task = {self.aux.task!r} is unknown; use one of {sorted(TASKS)} or ''")
            from ..data.facts import five_point_matrix

            if TASKS[self.aux.task].layout != "mtfl":
                raise ConfigError(f"aux.task = {self.aux.task!r}: only MTFL-layout tasks ('mtfl') can be mixed in "
                                  f"as partly labelled faces")
            main_layout = TASKS[self.task].layout
            try:
                five_point_matrix(main_layout)
            except KeyError as e:
                raise ConfigError(f"aux.task = {self.aux.task!r}: {e.args[0]}") from None
        o = self.optim
        checks = [
            ("optim.name", o.name in ("adam", "adamw"), "'adam' or 'adamw'"),
            ("optim.lr", 0 < o.lr < 1, "a positive learning rate below 1 (e.g. 1e-3)"),
            ("optim.weight_decay", o.weight_decay >= 0, ">= 0"),
            ("optim.batch_size", isinstance(o.batch_size, int) and o.batch_size >= 1, "an integer >= 1"),
            ("optim.epochs", isinstance(o.epochs, int) and o.epochs >= 1, "an integer >= 1"),
            ("optim.schedule", o.schedule in ("cosine", "step", "constant"), "'cosine', 'step' or 'constant'"),
            ("optim.warmup_epochs", o.warmup_epochs >= 0, ">= 0 (a run shorter than the warm-up stays in it)"),
            ("optim.step_epochs", o.step_epochs >= 1, ">= 1"),
            ("optim.gamma", 0 < o.gamma <= 1, "in (0, 1]"),
            ("optim.min_lr_ratio", 0 <= o.min_lr_ratio <= 1, "in [0, 1]"),
            ("optim.grad_clip", o.grad_clip >= 0, ">= 0 (0 turns clipping off)"),
            ("aux.weight", self.aux.weight >= 0, ">= 0"),
            ("aux.main_repeat", isinstance(self.aux.main_repeat, int) and self.aux.main_repeat >= 1,
             "an integer >= 1"),
            ("aux.pseudo_labels", not self.aux.pseudo_labels or (self.aux.task and
                                                                 Path(self.aux.pseudo_labels).is_file()),
             "an existing labels.parquet from scripts/pseudo_label_mtfl.py, with aux.task set (or '')"),
            ("aux.pseudo_weight", self.aux.pseudo_weight >= 0, ">= 0"),
            ("patience", isinstance(self.patience, int) and self.patience >= 0, "an integer >= 0"),
            ("mixed_precision", self.mixed_precision in ("auto", "no", "bf16", "fp16"),
             "'auto', 'no', 'bf16' or 'fp16'"),
            ("num_workers", isinstance(self.num_workers, int) and self.num_workers >= -1, "-1 (auto) or >= 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                value = self
                for part in name.split("."):
                    value = getattr(value, part)
                raise ConfigError(f"{name} = {value!r} is invalid: it must be {want}")
        return self

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown keys raise :class:`ConfigError`.

        Input fields the job leaves out come from the task's defaults (e.g.
        80x60 whole-image for ``imm_nose``).
        """
        data = dict(data)
        task = TASKS.get(data.get("task", cls.task))
        if task is not None and isinstance(data.get("input", {}), dict):
            defaults = {"width": task.input_size[0], "height": task.input_size[1],
                        "crop_mode": task.crop_mode, "enlarge": task.enlarge}
            data["input"] = {**defaults, **data.get("input", {})}
        return _from_dict(cls, data, "")


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}: {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'the job'}; accepted: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        f = fields[key]
        sub = {"input": InputSpec, "augment": AugmentConfig, "model": ModelConfig, "loss": LossConfig,
               "optim": OptimConfig, "aux": AuxDataConfig}.get(key) if cls is TrainConfig else None
        if sub is not None:
            kwargs[key] = _from_dict(sub, value, key)
        else:
            kwargs[key] = _coerce(value, f, f"{where + '.' if where else ''}{key}")
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, name: str) -> Any:
    """YAML reads 1e-3 as a string; turn numbers-as-strings into numbers where a number is expected."""
    t = str(f.type)
    if value is None:
        return value
    try:
        if t == "float" and not isinstance(value, bool):
            return float(value)
        if t == "int" and not isinstance(value, bool):
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} = {value!r} is not a {t}") from None
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value, e.g. optim.lr=1e-3")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_job(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a job YAML (plus ``--set`` overrides) into a validated :class:`TrainConfig`."""
    path = Path(path)
    if not path.exists():
        jobs = sorted(p.name for p in TRAIN_JOBS_DIR.glob("*.yaml"))
        raise ConfigError(f"job file {path} not found; the jobs in train_jobs/ are: {jobs}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job file is a YAML mapping of fields (task:, model:, optim:, ...), "
                          f"not a {type(data).__name__}; see train_jobs/nose_imm.yaml")
    data = apply_overrides(data, overrides or [])
    data.setdefault("name", path.stem)
    try:
        cfg = TrainConfig.from_dict(data)
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_yaml(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
