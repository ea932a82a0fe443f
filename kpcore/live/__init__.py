"""Inference on photos and video: :class:`~kpcore.live.predict.Predictor`
(:mod:`~kpcore.live.predict`), face detection (:mod:`~kpcore.live.detect`) and the
map from detector boxes to the crops a model was trained on
(:mod:`~kpcore.live.calibrate`), the onnxruntime CPU path
(:mod:`~kpcore.live.onnx_runtime`), tracking over video frames with One Euro
smoothing (:mod:`~kpcore.live.track`, :mod:`~kpcore.live.smoothing`), head pose
from 68 points (:mod:`~kpcore.live.pose`), drawing overlays (:mod:`~kpcore.live.render`)
and face morphing (:mod:`~kpcore.live.morph`). Nothing is imported here
(``kpcore.Predictor`` stays lazy); import the submodules.
"""
