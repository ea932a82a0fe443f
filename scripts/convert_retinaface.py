"""Convert the RetinaFace-MobileNetV2 graph of the ``retinaface`` 1.1.1 wheel to ONNX.

One-off script, kept so the shipped ``checkpoints/face-detector/`` can be rebuilt.
It needs TensorFlow and tf2onnx, which are **not** kpcore dependencies; run it in a
throwaway environment::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1" \\
        "protobuf==3.20.3" "numpy<2" onnx onnxruntime pillow
    /tmp/tfenv/bin/pip install retinaface==1.1.1 --no-deps
    /tmp/tfenv/bin/python scripts/convert_retinaface.py

What the frozen graph holds (found by reading its nodes):

* input ``x``: float32 ``(1, H, W, 3)``, RGB in 0..255, H and W multiples of 32
  (the upstream wrapper pads with zeros at the bottom/right); the graph itself
  normalises with ``x / 127.5 - 1`` (MobileNetV2 preprocessing);
* MobileNetV2 backbone, FPN, SSH context modules, class/box/landmark heads;
* decoding against priors generated from the input shape (2 per cell at steps
  8/16/32, as the row counts confirm; sizes 16-32 / 64-128 / 256-512 and variances
  0.1/0.2 in peteryuX/retinaface-tf2's config);
* ``NonMaxSuppressionV3`` with IoU 0.4 and score threshold 0.5 baked in, then
  ``Identity``: the kept rows.

We cut the graph **before** the NMS, at the decoded ``(N, 16)`` tensor, so kpcore
chooses its own score threshold and IoU (NMS on the few rows above the
threshold costs microseconds in numpy). Columns of that tensor:
``x1, y1, x2, y2`` (box, as fractions of the padded input width/height),
five landmarks ``(x, y)`` as fractions (subject's left eye is the image-right one,
see README), ``landmark_valid`` (always 1), ``score`` (softmax face probability).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np

WHEEL_NAME = "retinaface"
WHEEL_VERSION = "1.1.1"
PB_IN_WHEEL = "retinaface/src/frozen_graph.pb"
PB_SHA256 = "cf242e8627d0650d02bddbc8a8526944bc4dc69269bd2c1d1e43fb0930f95993"
TF_INPUT = "x:0"
TF_PRE_NMS = "RetinaFaceModel/tf_op_layer_concat_10/concat_10:0"  # decoded (N, 16)
TF_POST_NMS = "Identity:0"  # upstream output, after the baked-in NMS
ONNX_INPUT = "image"
ONNX_OUTPUT = "detections"
UPSTREAM_NMS_IOU = 0.4
UPSTREAM_SCORE_THRESHOLD = 0.5
OPSET = 17
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "checkpoints" / "face-detector"


def find_frozen_graph() -> Path:
    """Path of ``frozen_graph.pb`` inside the installed wheel, without importing it.

    Importing ``retinaface`` would pull in cv2 and run the model; we only need the file.
    """
    try:
        dist = importlib.metadata.distribution(WHEEL_NAME)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"the {WHEEL_NAME!r} wheel is not installed; run "
                 f"`pip install {WHEEL_NAME}=={WHEEL_VERSION} --no-deps` in this environment")
    if dist.version != WHEEL_VERSION:
        sys.exit(f"found {WHEEL_NAME} {dist.version}; this script expects {WHEEL_VERSION}")
    path = Path(dist.locate_file(PB_IN_WHEEL))
    if not path.is_file():
        sys.exit(f"{PB_IN_WHEEL} not found in the installed wheel (looked at {path})")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(pb_path: Path, onnx_path: Path) -> None:
    """Run tf2onnx on the graph, cut before the NMS, and save it at ``onnx_path``."""
    import tensorflow as tf
    import tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb_path.read_bytes())
    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        name="retinaface_mobilenetv2",
        input_names=[TF_INPUT],
        output_names=[TF_PRE_NMS],
        opset=OPSET,
        tensors_to_rename={TF_INPUT: ONNX_INPUT, TF_PRE_NMS: ONNX_OUTPUT},
    )
    model_proto.doc_string = (
        f"RetinaFace-MobileNetV2 from the PyPI wheel {WHEEL_NAME}=={WHEEL_VERSION} "
        f"({PB_IN_WHEEL}, sha256 {PB_SHA256}), converted with tf2onnx {tf2onnx.__version__} "
        f"(TensorFlow {tf.__version__}), cut before the NMS. Input 'image': float32 "
        "(1, H, W, 3) RGB 0..255, H and W multiples of 32. Output 'detections': (N, 16) = "
        "x1 y1 x2 y2, 5 landmarks (x, y), landmark_valid, score; coordinates are fractions "
        "of the input width/height."
    )
    _tidy(model_proto)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path.write_bytes(model_proto.SerializeToString())


def _tidy(model_proto) -> None:
    """Name the dynamic dimensions and replace a deprecated Resize attribute.

    The graph keeps only batch item 0 (it slices ``[0]`` before decoding), so the
    batch dimension is fixed to 1. The two FPN upsamplings use TF's
    ``half_pixel_centers`` nearest resize, which tf2onnx writes as
    ``tf_half_pixel_for_nn``; onnxruntime warns that it is deprecated on every
    session start. For an exact 2x upsampling (always the case here, because inputs
    are multiples of 32) ``floor((x + 0.5) / 2) == floor(x / 2)``, so ``asymmetric``
    gives the same pixels; :func:`check` confirms it against TensorFlow.
    """
    (inp,) = model_proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    dims[0].dim_value = 1
    for d, name in zip(dims[1:3], ("height", "width"), strict=True):
        d.dim_param = name
    (out,) = model_proto.graph.output
    out.type.tensor_type.shape.dim[0].dim_param = "num_priors"
    for node in model_proto.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        assert attrs["mode"].s == b"nearest" and attrs["nearest_mode"].s == b"floor", node
        if attrs["coordinate_transformation_mode"].s == b"tf_half_pixel_for_nn":
            attrs["coordinate_transformation_mode"].s = b"asymmetric"


def _nms(rows: np.ndarray, iou: float, score_threshold: float) -> np.ndarray:
    """Greedy NMS as TF's ``NonMaxSuppressionV3`` does it (used only to check the cut)."""
    rows = rows[rows[:, 15] >= score_threshold]
    rows = rows[np.argsort(-rows[:, 15], kind="stable")]
    keep: list[np.ndarray] = []
    for r in rows:
        ok = True
        for k in keep:
            ix = max(0.0, min(r[2], k[2]) - max(r[0], k[0]))
            iy = max(0.0, min(r[3], k[3]) - max(r[1], k[1]))
            inter = ix * iy
            union = (r[2] - r[0]) * (r[3] - r[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            keep.append(r)
    return np.array(keep).reshape(-1, 16)


def check(pb_path: Path, onnx_path: Path, images: list[Path]) -> dict:
    """Compare ONNX (+ numpy NMS) with the TF graph (+ its own NMS) on a few inputs."""
    import onnxruntime as ort
    import tensorflow as tf
    from PIL import Image

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb_path.read_bytes())

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    tf_fn = wrapped.prune(wrapped.graph.as_graph_element(TF_INPUT),
                          [wrapped.graph.as_graph_element(TF_PRE_NMS),
                           wrapped.graph.as_graph_element(TF_POST_NMS)])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    inputs: list[tuple[str, np.ndarray]] = []
    rng = np.random.default_rng(0)
    inputs.append(("noise 320x256", rng.uniform(0, 255, (1, 256, 320, 3)).astype(np.float32)))
    for p in images:
        img = Image.open(p).convert("RGB")
        w, h = img.size
        arr = np.zeros((1, -(-h // 32) * 32, -(-w // 32) * 32, 3), np.float32)
        arr[0, :h, :w] = np.asarray(img, np.float32)
        inputs.append((p.name, arr))

    report = {}
    for name, x in inputs:
        tf_pre, tf_post = (t.numpy() for t in tf_fn(tf.constant(x)))
        onnx_pre = sess.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
        ours = _nms(onnx_pre, UPSTREAM_NMS_IOU, UPSTREAM_SCORE_THRESHOLD)
        max_abs = float(np.abs(tf_pre - onnx_pre).max())
        same_count = len(ours) == len(tf_post)
        post_abs = float(np.abs(ours - tf_post).max()) if same_count and len(ours) else 0.0
        report[name] = {"rows": int(onnx_pre.shape[0]), "max_abs_diff_pre_nms": max_abs,
                        "faces_tf": int(len(tf_post)), "faces_onnx_numpy_nms": int(len(ours)),
                        "max_abs_diff_post_nms": post_abs}
        print(f"{name}: {report[name]}")
        if not same_count or max_abs > 1e-3 or post_abs > 1e-3:
            sys.exit(f"ONNX output differs from TensorFlow on {name}: {report[name]}")
    return report


def make_config(onnx_path: Path) -> dict:
    """Everything kpcore needs to run the ONNX file; read by :mod:`kpcore.live.detect`."""
    import tensorflow as tf
    import tf2onnx

    return {
        "name": "retinaface_mobilenetv2",
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": sha256(onnx_path),
        "input": {
            "name": ONNX_INPUT,
            "layout": "NHWC",
            "shape": [1, "height", "width", 3],
            "dtype": "float32",
            "colour": "RGB",
            "range": [0, 255],
            "normalisation": "inside the graph: x / 127.5 - 1",
            "pad_multiple": 32,
            "pad_value": 0,
            "pad_where": "bottom and right",
        },
        "output": {
            "name": ONNX_OUTPUT,
            "shape": ["num_priors", 16],
            "columns": ["x1", "y1", "x2", "y2",
                        "lm0_x", "lm0_y", "lm1_x", "lm1_y", "lm2_x", "lm2_y",
                        "lm3_x", "lm3_y", "lm4_x", "lm4_y", "landmark_valid", "score"],
            "coordinates": "fractions of the padded input width (x) and height (y); "
                           "0 is the left/top edge of the first pixel",
            "nms": "not included: the graph was cut before its NonMaxSuppressionV3",
        },
        # Verified on helen/testset against the 68-point annotations (eye centres,
        # nose tip 30, mouth corners 48/54): "right"/"left" are the subject's.
        "landmarks": ["right_eye", "left_eye", "nose_tip", "right_mouth_corner",
                      "left_mouth_corner"],
        "defaults": {"score_threshold": UPSTREAM_SCORE_THRESHOLD, "nms_iou": UPSTREAM_NMS_IOU},
        "source": {
            "pypi": f"{WHEEL_NAME}=={WHEEL_VERSION}",
            "file": PB_IN_WHEEL,
            "sha256": PB_SHA256,
            "homepage": "https://github.com/heewinkim/retinaface",
            "upstream_model": "https://github.com/peteryuX/retinaface-tf2",
            "training_data": "WIDER FACE",
        },
        "converted_with": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
                           "opset": OPSET, "script": "scripts/convert_retinaface.py"},
        "licence": "MIT (wheel metadata); see README.md for the details",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pb", type=Path, help="frozen_graph.pb (default: from the installed wheel)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check-images", type=Path, nargs="*", default=[],
                        help="images on which to compare TF and ONNX outputs")
    args = parser.parse_args(argv)

    pb_path = args.pb or find_frozen_graph()
    digest = sha256(pb_path)
    if digest != PB_SHA256:
        sys.exit(f"{pb_path} has sha256 {digest}, expected {PB_SHA256} (retinaface 1.1.1)")
    onnx_path = args.out / "retinaface_mobilenetv2.onnx"
    convert(pb_path, onnx_path)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB, sha256 {sha256(onnx_path)})")
    report = check(pb_path, onnx_path, args.check_images)
    config = make_config(onnx_path)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {args.out / 'config.json'}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
