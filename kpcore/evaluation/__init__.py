"""Evaluation: metrics (pixel error, NME, failure rate, CED and its AUC;
:mod:`~kpcore.evaluation.metrics`), evaluating a checkpoint on a test split with
per-image records (:mod:`~kpcore.evaluation.evaluate`), robustness under image
perturbations (:mod:`~kpcore.evaluation.robustness`), the accuracy/speed benchmark of
the shipped models (:mod:`~kpcore.evaluation.bench`) and dlib's reference predictor
(:mod:`~kpcore.evaluation.reference`). Nothing is imported here; import the submodules.
"""
