"""Training: typed job configs (:mod:`~kpcore.training.config`), the losses
(:mod:`~kpcore.training.losses`: coordinate, wing, heatmap and integral losses, picked
by name) and the training loop (:mod:`~kpcore.training.train`) that turns a job YAML
from ``train_jobs/`` into a run folder with metrics, logs and checkpoints. Nothing is
imported here (so importing the package does not load PyTorch); import the submodules.
"""
