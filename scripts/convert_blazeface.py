"""Convert MediaPipe's BlazeFace face detectors (``.tflite``) to ONNX, once, and check them.

    python3 -m venv /work/venvs/mp
    /work/venvs/mp/bin/pip install mediapipe==0.10.21 ai-edge-litert tflite onnx onnxruntime
    /work/venvs/mp/bin/python scripts/convert_blazeface.py --model short \\
        --check-images ../shared/data/ibug_300W_subset/helen/testset/*.jpg webapp/examples/*.jpg

The ``.tflite`` files come from the mediapipe 0.10.21 wheel (Apache-2.0), found
through the installed package (``mediapipe/modules/face_detection/``); the
script checks their sha256. The graph is rebuilt node by node with
``onnx.helper`` (no converter package): the input is taken as float32 NHWC RGB
0..255, normalised to [-1, 1] inside the graph (MediaPipe's ``ImageToTensor``
range), transposed to NCHW once, and every 4-D tensor stays NCHW until a
``RESHAPE`` (which flattens NHWC order, so it gets a transpose back first).

Constant tensors are read from the TFLite interpreter itself (with
``experimental_preserve_all_tensors``): the short-range model stores its
weights as float16 behind ``DEQUANTIZE`` ops and the full-range model as
block-sparse tensors behind ``DENSIFY`` ops; the interpreter's own output of
those ops is the dense float32 weight, so no sparse format is decoded here.

Checks (printed, and the script fails on a mismatch): on noise and on each
``--check-images`` photo (letterboxed to the model input as MediaPipe does) the
ONNX outputs match the TFLite interpreter's within ``--atol``; and
``kpcore.live.detect``'s numpy decoding (anchors, letterbox, sigmoid, NMS) of
the ONNX output finds the same faces as ``mediapipe.solutions.face_detection``
on the photos (see :func:`compare_with_mediapipe`).

Writes ``checkpoints/face-detector-blazeface/blazeface_{short,full}_range.onnx``;
``config.json`` there is written by hand (anchors and decoding options, source,
licence) and the script prints the sha256 to put in it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "checkpoints" / "face-detector-blazeface"
MODELS = {
    "short": ("face_detection_short_range.tflite",
              "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "full": ("face_detection_full_range_sparse.tflite",
             "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
}
OPSET = 17


def tflite_path(name: str) -> Path:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mediapipe is not installed in this environment; see the module docstring")
    return Path(next(iter(spec.submodule_search_locations))) / "modules" / "face_detection" / name


def _op_name(model, op) -> str:
    import tflite

    code = model.OperatorCodes(op.OpcodeIndex())
    number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    return next(k for k, v in vars(tflite.BuiltinOperator).items() if v == number)


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _same_pads(in_hw, kernel, stride, dilation=(1, 1)) -> list[int]:
    """TensorFlow's SAME padding as ONNX pads [top, left, bottom, right] (the extra pixel goes last)."""
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


class Converter:
    """One TFLite subgraph -> one ONNX graph (the ops BlazeFace uses, and nothing else)."""

    FOLDED = {"DEQUANTIZE", "DENSIFY"}  # constant producers: their outputs are read from the interpreter

    def __init__(self, path: Path) -> None:
        import tflite
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.tfl = tflite
        self.buf = path.read_bytes()
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)
        self.graph = self.model.Subgraphs(0)
        # without the XNNPACK delegate: it would take the DEQUANTIZE/DENSIFY ops over, leaving their
        # outputs (the dense weights read below) unwritten
        self.interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interp.allocate_tensors()
        inp = self.interp.get_input_details()[0]
        self.interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
        self.interp.invoke()
        self.nodes: list = []
        self.inits: list = []
        self.constants: set[int] = set()
        for i in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(i)
            if _op_name(self.model, op) in self.FOLDED:
                self.constants.add(int(op.Outputs(0)))

    # --------------------------------------------------------------- tensors
    def tensor(self, index: int):
        return self.graph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        return [int(v) for v in self.tensor(index).ShapeAsNumpy()]

    def name(self, index: int) -> str:
        return f"t{index}"

    def is_constant(self, index: int) -> bool:
        buffer = self.model.Buffers(self.tensor(index).Buffer())
        return index in self.constants or (buffer is not None and buffer.DataLength() > 0)

    def value(self, index: int) -> np.ndarray:
        return np.asarray(self.interp.get_tensor(index)).astype(np.float32)

    def const(self, array: np.ndarray, name: str, dtype=None) -> str:
        array = np.asarray(array, dtype=dtype)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"n{len(self.nodes)}_{op_type}", **attrs))
        return output

    def activation(self, code: int, x: str, out: str) -> str:
        if code == 0:
            return self.node("Identity", [x], out)
        if code == 1:
            return self.node("Relu", [x], out)
        if code == 3:
            return self.node("Clip", [x, self.const(np.float32(0), f"{out}_lo"),
                                      self.const(np.float32(6), f"{out}_hi")], out)
        raise NotImplementedError(f"fused activation {code}")

    # ----------------------------------------------------------------- build
    def build(self) -> onnx.ModelProto:
        tfl = self.tfl
        g = self.graph
        in_index = int(g.Inputs(0))
        _, height, width, channels = self.shape(in_index)
        scaled = self.node("Add", [self.node("Mul", ["image", self.const(np.float32(1 / 127.5), "scale")], "scaled"),
                                   self.const(np.float32(-1.0), "shift")], "normalised")
        self.node("Transpose", [scaled], self.name(in_index), perm=[0, 3, 1, 2])
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            kind = _op_name(self.model, op)
            if kind in self.FOLDED:
                continue
            ins = [int(op.Inputs(j)) for j in range(op.InputsLength())]
            out = int(op.Outputs(0))
            o = self.name(out)
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                depthwise = kind == "DEPTHWISE_CONV_2D"
                opts = _options(op, tfl.DepthwiseConv2DOptions if depthwise else tfl.Conv2DOptions)
                w = self.value(ins[1])
                w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)  # -> (O, I/g, kh, kw)
                kh, kw = w.shape[2:]
                stride = [opts.StrideH(), opts.StrideW()]
                dilation = [opts.DilationHFactor(), opts.DilationWFactor()]
                in_shape = self.shape(ins[0])
                pads = _same_pads(in_shape[1:3], (kh, kw), stride, dilation) if opts.Padding() == 0 else [0] * 4
                inputs = [self.name(ins[0]), self.const(w, f"{o}_w")]
                if len(ins) > 2 and ins[2] >= 0:
                    inputs.append(self.const(self.value(ins[2]), f"{o}_b"))
                conv = self.node("Conv", inputs, f"{o}_conv", kernel_shape=[kh, kw], strides=stride, pads=pads,
                                 dilations=dilation, group=in_shape[3] if depthwise else 1)
                self.activation(opts.FusedActivationFunction(), conv, o)
            elif kind == "ADD":
                opts = _options(op, tfl.AddOptions)
                args = [self.const(self.value(t), f"{o}_c{j}") if self.is_constant(t) else self.name(t)
                        for j, t in enumerate(ins)]
                self.activation(opts.FusedActivationFunction(), self.node("Add", args, f"{o}_add"), o)
            elif kind == "RELU":
                self.node("Relu", [self.name(ins[0])], o)
            elif kind == "MAX_POOL_2D":
                opts = _options(op, tfl.Pool2DOptions)
                k = [opts.FilterHeight(), opts.FilterWidth()]
                stride = [opts.StrideH(), opts.StrideW()]
                pads = _same_pads(self.shape(ins[0])[1:3], k, stride) if opts.Padding() == 0 else [0] * 4
                pool = self.node("MaxPool", [self.name(ins[0])], f"{o}_pool", kernel_shape=k, strides=stride,
                                 pads=pads)
                self.activation(opts.FusedActivationFunction(), pool, o)
            elif kind == "PAD":
                p = np.asarray(self.interp.get_tensor(ins[1])).astype(np.int64)  # NHWC (4, 2)
                nchw = p[[0, 3, 1, 2]]
                self.node("Pad", [self.name(ins[0]), self.const(np.concatenate([nchw[:, 0], nchw[:, 1]]),
                                                                 f"{o}_pads", np.int64)], o, mode="constant")
            elif kind == "RESHAPE":
                src = self.name(ins[0])
                if len(self.shape(ins[0])) == 4:  # TFLite flattens NHWC order
                    src = self.node("Transpose", [src], f"{o}_nhwc", perm=[0, 2, 3, 1])
                self.node("Reshape", [src, self.const(np.array(self.shape(out), np.int64), f"{o}_shape")], o)
            elif kind == "CONCATENATION":
                opts = _options(op, tfl.ConcatenationOptions)
                rank = len(self.shape(out))
                axis = opts.Axis() % rank
                if rank == 4:
                    axis = [0, 2, 3, 1][axis]
                cat = self.node("Concat", [self.name(t) for t in ins], f"{o}_cat", axis=axis)
                self.activation(opts.FusedActivationFunction(), cat, o)
            elif kind == "RESIZE_BILINEAR":
                opts = _options(op, tfl.ResizeBilinearOptions)
                mode = ("align_corners" if opts.AlignCorners() else
                        "half_pixel" if opts.HalfPixelCenters() else "asymmetric")
                n, h, w_, c = self.shape(out)
                self.node("Resize", [self.name(ins[0]), "", "", self.const(np.array([n, c, h, w_], np.int64),
                                                                          f"{o}_size")],
                          o, mode="linear", coordinate_transformation_mode=mode)
            elif kind == "DEPTH_TO_SPACE":
                opts = _options(op, tfl.DepthToSpaceOptions)
                self.node("DepthToSpace", [self.name(ins[0])], o, blocksize=opts.BlockSize(), mode="DCR")
            else:
                raise NotImplementedError(f"TFLite op {kind} is not converted; BlazeFace should not need it")
        outputs = []
        for j in range(g.OutputsLength()):
            index = int(g.Outputs(j))
            label = ("regressors", "classificators")[j]
            self.node("Identity", [self.name(index)], label)
            outputs.append(helper.make_tensor_value_info(label, TensorProto.FLOAT, self.shape(index)))
        graph = helper.make_graph(self.nodes, "blazeface",
                                  [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                 [1, height, width, channels])],
                                  outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="kpcore scripts/convert_blazeface.py")
        onnx.checker.check_model(model, full_check=True)
        return model

    def run_tflite(self, image: np.ndarray) -> list[np.ndarray]:
        """The interpreter's outputs for an NHWC float32 0..255 image (normalised as MediaPipe does)."""
        inp = self.interp.get_input_details()[0]
        self.interp.set_tensor(inp["index"], (image / 127.5 - 1.0).astype(np.float32))
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.interp.get_output_details()]


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """``kpcore.live.detect``'s own letterbox (so the check covers it)."""
    sys.path.insert(0, str(ROOT))
    from kpcore.live.detect import letterbox as kp_letterbox

    return kp_letterbox(image, size)[0]


def check(conv: Converter, onnx_file: Path, images: list[Path], atol: float, which: str) -> None:
    import cv2
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    size = conv.shape(int(conv.graph.Inputs(0)))[1]
    rng = np.random.default_rng(0)
    tests = [("noise", rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32))]
    decoded = []
    for path in images:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        decoded.append((path, rgb))
        tests.append((path.name, letterbox(rgb, size)[None].astype(np.float32)))
    worst = 0.0
    for label, x in tests:
        ref = conv.run_tflite(x)
        got = session.run(None, {"image": x})
        # relative to each output's largest value (box offsets are input pixels, up to ~100)
        diff = max(float(np.abs(a - b).max() / max(1.0, np.abs(a).max())) for a, b in zip(ref, got, strict=True))
        worst = max(worst, diff)
        if diff > atol:
            raise SystemExit(f"{label}: ONNX differs from TFLite by {diff:.3g} (> {atol})")
    print(f"ONNX vs TFLite on noise and {len(images)} photos: max difference {worst:.3g} (relative to the largest output value)")
    if decoded and which in json.loads((OUT_DIR / "config.json").read_text())["variants"]:
        compare_with_mediapipe(onnx_file, decoded, which)
    elif decoded:
        print(f"the {which}-range model is not in config.json's variants: decoding not compared with mediapipe")


CLEAR_MARGIN = 0.1
"""Faces scored within this of the threshold may come and go with the resize (we shrink with
area averaging, MediaPipe with a bilinear warp); the check pairs up only the others."""
BOX_TOLERANCE = 0.03
"""Largest accepted box-edge difference from MediaPipe's, as a fraction of the photo's longer side."""


def compare_with_mediapipe(onnx_file: Path, photos, which: str) -> None:
    """Our decoding of the ONNX output against ``mediapipe.solutions.face_detection`` on the photos.

    Every face one side finds clearly (score >= threshold + :data:`CLEAR_MARGIN`) must have a
    face on the other side whose box edges are within :data:`BOX_TOLERANCE` of the photo's side
    (boxes compared clipped to the photo, as kpcore clips them).
    """
    import mediapipe as mp

    sys.path.insert(0, str(ROOT))
    from kpcore.live.detect import BlazeFaceDetector

    det = BlazeFaceDetector(OUT_DIR, variant=which, threads=1)
    clear = det.score_threshold + CLEAR_MARGIN
    counts = {"mediapipe": 0, "kpcore": 0}
    errors, unmatched = [], []
    with mp.solutions.face_detection.FaceDetection(model_selection={"short": 0, "full": 1}[which],
                                                   min_detection_confidence=det.score_threshold) as fd:
        for path, rgb in photos:
            h, w = rgb.shape[:2]
            theirs = []
            for d in fd.process(rgb).detections or []:
                b = d.location_data.relative_bounding_box
                x1, y1 = np.clip(b.xmin * w, 0, w), np.clip(b.ymin * h, 0, h)
                x2, y2 = np.clip((b.xmin + b.width) * w, 0, w), np.clip((b.ymin + b.height) * h, 0, h)
                theirs.append((np.array([x1, y1, x2, y2]), d.score[0]))
            ours = [(np.array([f.box[0], f.box[1], f.box[0] + f.box[2], f.box[1] + f.box[3]]), f.score)
                    for f in det.detect(rgb)]
            counts["mediapipe"] += len(theirs)
            counts["kpcore"] += len(ours)
            for mine, other, label in ((theirs, ours, "mediapipe"), (ours, theirs, "kpcore")):
                for box, score in mine:
                    if score < clear:
                        continue
                    err = min((np.abs(box - b).max() / max(w, h) for b, _ in other), default=np.inf)
                    errors.append(err)
                    if err > BOX_TOLERANCE:
                        unmatched.append(f"{path.name}: {label} finds {box.round(1)} (score {score:.2f}), "
                                         f"nearest on the other side {100 * err:.1f}% of the side away")
    print(f"faces (all scores): mediapipe {counts['mediapipe']}, kpcore {counts['kpcore']}; clear faces "
          f"paired: {len(errors)}, box difference median {100 * np.median(errors):.2f}%, worst "
          f"{100 * max(errors):.2f}% of the photo's longer side")
    for line in unmatched:
        print("  " + line)
    if unmatched:
        raise SystemExit("the decoding does not match mediapipe's")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="short")
    ap.add_argument("--check-images", nargs="*", type=Path, default=[])
    ap.add_argument("--atol", type=float, default=1e-4,
                    help="largest accepted output difference, relative to the output's largest magnitude")
    args = ap.parse_args()
    name, digest = MODELS[args.model]
    src = tflite_path(name)
    actual = hashlib.sha256(src.read_bytes()).hexdigest()
    print(f"{src} sha256 {actual}")
    if actual != digest:
        raise SystemExit(f"sha256 mismatch for {src}: expected {digest}; is this mediapipe 0.10.21?")
    conv = Converter(src)
    model = conv.build()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"blazeface_{args.model}_range.onnx"
    onnx.save(model, out)
    print(f"written {out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")
    check(conv, out, args.check_images, args.atol, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
