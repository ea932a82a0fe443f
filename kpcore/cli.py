"""``python -m kpcore``: the command line. Each command is a thin call into the library."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from .errors import KpcoreError


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import dataset_summary, resolve_data_root

    summary = dataset_summary(args.data_root)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"data root: {resolve_data_root(args.data_root).resolve()}")
    for name, info in summary.items():
        if "error" in info:
            print(f"  {name:9s} missing - {info['error']}")
        else:
            splits = ", ".join(f"{k} {v}" for k, v in info.items() if k != "path")
            print(f"  {name:9s} {splits}   ({info['path']})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import describe_models

    rows = describe_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':22s} {'kind':10s} {'params':>11s}  input   description")
    for r in rows:
        size = "x".join(str(v) for v in r["default_input_size"])
        print(f"{r['name']:22s} {r['kind']:10s} {r['params']:11,d}  {size:7s} {r['description']}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .data import resolve_data_root
    from .data.download import download_dataset

    root = Path(args.root) if args.root else resolve_data_root(None)
    path = download_dataset(args.dataset, root, force=args.force, archive=args.archive)
    print(f"{args.dataset} ready at {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.train import train_from_job

    run_dir = train_from_job(args.job, data_root=args.data_root, out=args.out, epochs=args.epochs,
                             resume=args.resume, force=args.force, overrides=args.set)
    print(f"run folder: {run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.perturb:
        return _cmd_robustness(args)
    from .evaluation.evaluate import evaluate_model

    try:
        summary = evaluate_model(args.model, data_root=args.data_root, split=args.split, labels=args.labels,
                                 json_out=args.json, flip_test=args.flip_test, save=not args.no_save,
                                 boxes=args.boxes, dataset=args.dataset, out=args.out, overwrite=args.overwrite)
    except ValueError as e:  # a split, dataset or box source the task does not have
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_evaluation(summary))
    _say_shipped_records_kept(args, summary.get("saved_to"))
    return 0


def _say_shipped_records_kept(args: argparse.Namespace, saved_to: str | None) -> None:
    """A note when the results went to runs/eval/ because the model's own records ship with kpcore."""
    from .paths import RUNS_DIR

    if saved_to and not args.out and Path(saved_to).resolve().is_relative_to((RUNS_DIR / "eval").resolve()):
        print(f"  ({args.model}'s own records ship with kpcore and were kept; --overwrite replaces them, "
              f"--out DIR writes elsewhere)")


def format_evaluation(summary: dict) -> str:
    """What ``kpcore evaluate`` prints: what was measured, the figures, per pose, where it wrote."""
    pct = 100.0
    lines = [
        f"{summary['model']} on {summary['task']} / {summary['split']}: {summary['n']} faces, "
        f"boxes from the {'face detector' if summary['boxes'] == 'detector' else 'labels'}, "
        f"flip-test {'on' if summary['flip_test'] else 'off'}"
        + (f", network on {summary['backend']}" if "backend" in summary else ""),
        f"  NME {summary['nme'] * pct:.2f}% ({summary['norm']}), failure rate "
        f"{summary['failure_rate'] * pct:.1f}% (NME > {summary['failure_threshold'] * pct:.0f}%), "
        f"AUC@{summary['failure_threshold'] * pct:.0f}% {summary['auc']:.3f}, "
        f"mean error {summary['mean_px_error']:.2f} px",
    ]
    if "spearman_confidence" in summary:
        lines.append(f"  confidence vs NME: Spearman {summary['spearman_confidence']:+.3f}")
    for row in summary.get("by_pose", []):
        lines.append(f"  {row['name']:>13}: {row['n']:4d} faces, NME {row['nme'] * pct:5.2f}%, "
                     f"failure rate {row['failure_rate'] * pct:5.1f}%")
    if "saved_to" in summary:
        lines.append(f"  wrote {summary['saved_to']}/ (summary.json, per_image.csv, ced.csv, thumbs/)")
    else:
        lines.append("  nothing written (--no-save)")
    return "\n".join(lines)


def _cmd_robustness(args: argparse.Namespace) -> int:
    """``evaluate MODEL --perturb ...``: kpcore.evaluation.robustness instead of the plain evaluation."""
    from .data.datasets import get_task
    from .evaluation.evaluate import records_dir
    from .evaluation.robustness import evaluate_robustness, format_robustness, parse_perturb
    from .live.predict import Predictor

    try:
        perturbations = parse_perturb(args.perturb)
        predictor = Predictor.from_pretrained(args.model)
        task = get_task(predictor.config["task"])
        split = args.split or ("test" if "test" in task.splits else "val")
        out = args.out or records_dir(args.model, predictor.folder, split, args.overwrite)
        table = evaluate_robustness(args.model, perturbations, data_root=args.data_root, split=split, out=out,
                                    save=not args.no_save, predictor=predictor)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.model}: NME (% of the normalising distance) under perturbations, {int(table['n'].iloc[0])} faces")
    print(format_robustness(table))
    _say_shipped_records_kept(args, table.attrs.get("saved_to"))  # format_robustness said where it wrote
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .models.export import export_checkpoint, export_records

    records = export_records(args.run)
    print(f"records -> {records}")
    if args.to:
        print(f"checkpoint -> {export_checkpoint(args.run, args.to, half=args.half, records=records)}")
        if args.onnx:
            _cmd_export_onnx(argparse.Namespace(model=args.to, int8=False))
    elif args.onnx:
        print("error: --onnx needs --to FOLDER (the checkpoint to write model.onnx into)", file=sys.stderr)
        return 2
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from .live.onnx_runtime import INT8_MAX_NME_DELTA
    from .models.onnx_export import export_onnx

    result = export_onnx(args.model, int8=args.int8, data_root=getattr(args, "data_root", None))
    print(f"wrote {result['path']} (max |ONNX - PyTorch| = {result['max_abs_diff']:.2g} in normalised coordinates)")
    if "int8_path" in result:
        delta = (result["int8_val_nme"] - result["float_val_nme"]) * 100
        verdict = ("used by default (backend 'auto')" if result["int8_used"] else
                   f"more than {INT8_MAX_NME_DELTA * 100:.1f} points worse: not used by default "
                   f"(backend='int8' forces it)")
        print(f"wrote {result['int8_path']} (int8): val NME {result['int8_val_nme'] * 100:.3f}% vs "
              f"{result['float_val_nme'] * 100:.3f}% in float32 ({delta:+.3f} points), {verdict}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .live.calibrate import calibrate_checkpoint

    box_map = calibrate_checkpoint(args.model, data_root=args.data_root)
    print(json.dumps(box_map, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation.bench import SECTIONS, run_bench, run_speed_bench

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"error: unknown --sections {unknown}; choose from {','.join(SECTIONS)}", file=sys.stderr)
        return 2
    if "models" in sections:
        run_bench(json_out=args.json, data_root=args.data_root, quick=args.quick, threads=args.threads)
    if {"speed", "video", "mtfl", "batch"} & set(sections):
        run_speed_bench(json_out=args.json, data_root=args.data_root, sections=sections,
                        threads=args.threads or 2, model=args.model, quick=args.quick)
    return 0


def _cmd_track(args: argparse.Namespace) -> int:
    from .console import progress_enabled
    from .live.predict import Predictor
    from .live.smoothing import OneEuroParams
    from .live.track import read_frames, track_video

    # FFmpeg's own messages about a damaged file ("partial file", "Error splitting the input into NAL
    # units") would bury kpcore's one-line error; set OPENCV_FFMPEG_LOGLEVEL to see them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    params = OneEuroParams(min_cutoff=args.min_cutoff, beta=args.beta, d_cutoff=args.d_cutoff)
    params.validate()
    read_frames(args.video)  # a missing file or one that is not a video fails before the model loads
    predictor = Predictor.from_pretrained(args.model, threads=args.threads)
    summary = track_video(args.video, args.csv, args.video_out, predictor, smooth=not args.no_smooth,
                          params=params, detect_every=args.detect_every, progress=progress_enabled())
    if not summary["faces"]:
        from .errors import NoFaceFoundError

        raise NoFaceFoundError(f"no face found in any of the {summary['frames']} frames of {args.video} (the CSV "
                               f"{summary['csv']} has only its header); try a video where a face is larger "
                               f"and frontal, or --detect-every 1")
    print(f"{summary['frames']} frames, {summary['faces']} face(s), detector ran on {summary['detector_runs']} "
          f"frame(s), {summary['fps']} frames/s; points -> {summary['csv']}")
    if "video" in summary:
        print(f"annotated video -> {summary['video']} ({summary['codec']})")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .models.hub import push

    timeout = {"timeout": args.timeout} if args.timeout else {}  # default: kpcore.models.hub.HUB_TIMEOUT_S
    url = push(args.model_dir, args.repo_id, token=args.token, private=args.private, **timeout)
    print(f"pushed to {url}")
    return 0


DEFAULT_PREDICT_MODEL = "face68-300w"
POINT_CSV_HEADER = ("face", "point", "x", "y", "point_confidence", "face_score", "face_confidence",
                    "yaw", "pitch", "roll")


def _model_argument(text: str) -> str:
    """A model argument as ``resolve_model_dir`` takes it; ``checkpoints/<name>`` of a shipped model
    works from any folder (not only inside the repository)."""
    from .models.hub import shipped_names

    path = Path(text).expanduser()
    if not path.is_dir() and path.parent.name == "checkpoints" and path.name in shipped_names():
        return path.name
    return text


def _face_line(i: int, face) -> str:
    """One line per face: box, detector score, keypoint confidence, head pose."""
    left, top, width, height = face.box
    parts = [f"face {i}: box {left:.0f},{top:.0f} {width:.0f}x{height:.0f}", f"score {face.score:.0%}"]
    if face.confidence is not None:
        parts.append(f"confidence {face.confidence:.2f}" + (" (low)" if face.confidence < 0.5 else ""))
    if face.pose is not None:
        parts.append("yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f} deg".format(**face.pose))
    return " · ".join(parts)


def _write_points_csv(faces, path: str) -> None:
    import csv

    def fmt(v, digits):
        return "" if v is None else f"{float(v):.{digits}f}"

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(POINT_CSV_HEADER)
        for i, face in enumerate(faces, 1):
            pose = face.pose or {}
            per_face = [fmt(face.score, 4), fmt(face.confidence, 4), *(fmt(pose.get(k), 2) for k in ("yaw", "pitch", "roll"))]
            for j, (x, y) in enumerate(face.points):
                pc = None if face.point_confidence is None else face.point_confidence[j]
                writer.writerow([i, j, f"{x:.2f}", f"{y:.2f}", fmt(pc, 3), *per_face])


_TABLE_HELP = "the table of faces: .parquet, .csv or .jsonl (columns in docs/FORMATS.md)"
_IMAGE_OUT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _split_model(inputs: list[str], model: str) -> tuple[str, list[str]]:
    """The old form ``predict MODEL PHOTO``: a first argument that is a checkpoint folder or a shipped
    model name (and not a photo, folder of photos or pattern) is the model."""
    from .models.checkpoint import CONFIG_FILE
    from .models.hub import shipped_names

    if len(inputs) < 2:
        return model, inputs
    first = Path(inputs[0]).expanduser()
    if (first / CONFIG_FILE).is_file() or (not first.exists() and inputs[0] in shipped_names()):
        return inputs[0], inputs[1:]
    return model, inputs


def _is_one_photo(inputs: list[str]) -> bool:
    from .live.batch import LIST_EXTENSIONS, is_video

    if len(inputs) != 1:
        return False
    path = Path(inputs[0])
    return not path.is_dir() and path.suffix.lower() not in LIST_EXTENSIONS and not is_video(path) and \
        not (any(c in inputs[0] for c in "*?[") and not path.exists())


def _cmd_predict(args: argparse.Namespace) -> int:
    model, inputs = _split_model(args.inputs, args.model)
    table = args.out
    if table and Path(table).suffix.lower() in _IMAGE_OUT and _is_one_photo(inputs):
        args.overlay, table = args.overlay or table, None  # --out was once the name of --overlay
    if table is None and _is_one_photo(inputs):
        return _predict_one_photo(args, model, inputs[0])
    if table is None:
        print(f"error: {len(inputs)} inputs (or a folder, pattern, list or video) need --out TABLE, e.g. "
              f"--out faces.parquet ({_TABLE_HELP})", file=sys.stderr)
        return 2
    one_photo_flags = [f for f, v in (("--json", args.json), ("--csv", args.csv), ("--overlay", args.overlay)) if v]
    if one_photo_flags:
        print(f"error: {', '.join(one_photo_flags)} describe one photo; with --out TABLE every face is a row "
              f"of the table (drop {', '.join(one_photo_flags)})", file=sys.stderr)
        return 2
    from .console import progress_enabled
    from .live.batch import BatchOptions, run_batch

    options = BatchOptions(min_score=args.min_score, min_confidence=args.min_confidence,
                           whole_image=args.whole_image, detector=args.detector)
    s = run_batch(inputs, table, model=_model_argument(model), workers=args.workers, engine=args.engine,
                  options=options, chunk_size=args.chunk_size, progress=progress_enabled(),
                  overwrite=args.overwrite)
    done_before = f", {s['skipped_inputs']} done by an earlier run" if s["skipped_inputs"] else ""
    speed = f", {s['images_per_s']:.1f} inputs/s" if s["images_per_s"] else ""
    print(f"{s['inputs']} inputs{done_before}: {s['faces']} faces ({s['low_confidence']} below min confidence), "
          f"{s['no_face']} with no face, {s['unreadable']} unreadable, {s['error']} errors "
          f"({s['engine']} engine, {s['workers']} worker{'s' if s['workers'] != 1 else ''}{speed})")
    print(f"table: {s['out']} ({s['rows']} rows)")
    if s["not_inputs"]:
        print(s["not_inputs"])
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    from .console import progress_enabled
    from .live.align import align_inputs

    model, inputs = _split_model(args.inputs, args.model)
    s = align_inputs(inputs, args.out, model=_model_argument(model), size=args.size,
                     min_confidence=args.min_confidence, progress=progress_enabled(), fmt=args.format)
    print(f"{s['crops']} aligned {args.size}x{args.size} crops from {s['inputs']} inputs -> {s['out']}/ "
          f"(index: {s['index']})")
    print(f"skipped: {s['low_confidence']} faces below confidence {args.min_confidence}, {s['no_face']} inputs "
          f"with no face, {s['unreadable']} unreadable, {s['error']} errors")
    return 0


def _predict_one_photo(args: argparse.Namespace, model: str, image: str) -> int:
    import numpy as np

    from .errors import NoFaceFoundError
    from .live.predict import Predictor

    pred = Predictor.from_pretrained(_model_argument(model))
    if args.detector == "retinaface":
        from .live.detect import get_detector

        pred._detector = get_detector().slow
    try:
        faces = pred.predict(image, min_score=args.min_score, whole_image_if_no_face=args.whole_image)
    except NoFaceFoundError as e:
        raise NoFaceFoundError(f"no face found in {image!r}; try a photo where the face is larger and frontal, "
                               "or pass --whole-image to place the points on the whole image") from e
    faces.sort(key=lambda f: f.box[0])  # face 1 is the leftmost, as in the demo
    from .data.imageio import load_image_with_info

    img, info = load_image_with_info(image)  # the same loader predict used: size, EXIF orientation
    width, height = info.size
    whole = args.whole_image and len(faces) == 1 and faces[0].score == 0.0
    k = len(faces[0].points) if faces else 0
    head = f"{Path(image).name}: {width}x{height}, "
    head += (f"no face found, {k} points on the whole image" if whole else
             f"{len(faces)} face{'s' if len(faces) != 1 else ''}, {k} points each")
    print(f"{head} ({pred.name})")
    for i, face in enumerate(faces, 1):
        print("  " + _face_line(i, face))
    if args.json:
        doc = {"image": str(image), "image_size": [width, height], "model": pred.name, "layout": pred.facts.name,
               "convention": "(x, y) pixels, 0-based, pixel centres; pose in degrees (kpcore.live.pose)",
               "faces": [f.to_dict() for f in faces]}
        text = json.dumps(doc, separators=(",", ":"))
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"points written to {args.json}", file=sys.stderr)
    if args.csv:
        _write_points_csv(faces, args.csv)
        print(f"points written to {args.csv}", file=sys.stderr)
    overlay = args.overlay
    if overlay:
        from PIL import Image

        from .live.render import LOW_CONFIDENCE, FaceMark, draw_faces

        shown_scale = np.array(img.shape[1::-1], float) / np.array(info.size, float)
        marks = []
        for i, f in enumerate(faces, 1):
            pts = (np.asarray(f.points, float) + 0.5) * shown_scale - 0.5
            box = None if whole else [f.box[0] * shown_scale[0], f.box[1] * shown_scale[1],
                                      f.box[2] * shown_scale[0], f.box[3] * shown_scale[1]]
            label = "" if whole else f"face {i} · {f.score:.0%}" + (
                "" if f.confidence is None else f" · conf {f.confidence:.2f}")
            marks.append(FaceMark(points=pts, box=box, label=label, point_confidence=f.point_confidence,
                                  low=f.confidence is not None and f.confidence < LOW_CONFIDENCE, pose=f.pose,
                                  axes_origin=tuple(pts[30]) if len(pts) == 68 else None))
        Image.fromarray(draw_faces(img, marks, pred.facts)).save(overlay)
        print(f"overlay written to {overlay}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .live.batch import DEFAULT_CHUNK as BATCH_CHUNK  # light: numpy only
    from .live.batch import RAY_CHUNK
    from .live.smoothing import OneEuroParams as OneEuroDefaults  # light: numpy only

    p = argparse.ArgumentParser(prog="kpcore", description="Facial keypoint detection: data, training, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    data_root_help = "folder holding imm_face_db/ and ibug_300W_*/ (default: $KPCORE_DATA or ./data)"

    s = sub.add_parser("datasets", help="list the datasets found under the data root")
    s.add_argument("--data-root", help=data_root_help)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_datasets)

    s = sub.add_parser("models", help="list the registered models")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("download", help="download and extract an official dataset archive")
    s.add_argument("dataset", choices=["imm", "ibug300w", "mtfl"])
    s.add_argument("--root", help="where to put it (default: $KPCORE_DATA or ./data)")
    s.add_argument("--archive", help="extract this already-downloaded archive instead of downloading")
    s.add_argument("--force", action="store_true", help="download again even if present")
    s.set_defaults(func=_cmd_download)

    s = sub.add_parser("train", help="train a model from a job file (train_jobs/*.yaml)")
    s.add_argument("job", help="job YAML file")
    s.add_argument("--data-root", help=data_root_help)
    s.add_argument("--out", help="run folder (default: runs/<job name>)")
    s.add_argument("--epochs", type=_count(1), help="override the number of epochs")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    s.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-3 (repeatable)")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a checkpoint folder or Hub repo id")
    s.add_argument("model", help="checkpoint folder (e.g. checkpoints/face68-300w), Hub repo id (user/repo), "
                                 "or 'dlib' (its 68-point predictor on the same boxes)")
    s.add_argument("--data-root", help=data_root_help)
    s.add_argument("--split", default=None, help="val or test (default: test if the task has one, else val)")
    s.add_argument("--labels", help="an XML in the 300-W form to evaluate on (images relative to it)")
    s.add_argument("--json", help="also write the summary JSON here")
    s.add_argument("--flip-test", action="store_true", help="average with the prediction on the flipped face")
    s.add_argument("--no-save", action="store_true", help="write no result files")
    s.add_argument("--out", help="write the result files here (default: <model>/eval/<split>/; for a model "
                                 "that ships with kpcore, 'dlib' or a Hub model: runs/eval/<model>/<split>/)")
    s.add_argument("--overwrite", action="store_true",
                   help="write a shipped model's results into its own eval/ folder (or records/dlib/), "
                        "replacing the records that ship with it")
    s.add_argument("--dataset", choices=["mtfl"],
                   help="evaluate on another dataset: mtfl = MTFL's five points mapped from the 68, per pose")
    s.add_argument("--boxes", choices=["dataset", "detector"], default="dataset",
                   help="face boxes from the labels (default) or from the face detector (see `calibrate`)")
    s.add_argument("--perturb", metavar="NAMES",
                   help="robustness instead: NME under blur,noise,brightness,scale,rotate,occlude (or 'all') "
                        "at a few strengths each, saved as robustness.csv (kpcore/evaluation/robustness.py)")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("calibrate", help="fit the detector-box -> training-crop map of a checkpoint")
    s.add_argument("model", help="checkpoint folder")
    s.add_argument("--data-root", help=data_root_help)
    s.set_defaults(func=_cmd_calibrate)

    s = sub.add_parser("export", help="ship a run: records to records/<run>/, best model to --to FOLDER")
    s.add_argument("run", help="run folder (runs/<name>)")
    s.add_argument("--to", help="checkpoint folder to write, e.g. checkpoints/face68-300w")
    s.add_argument("--half", action="store_true", help="store float weights as float16")
    s.add_argument("--onnx", action="store_true", help="also write model.onnx into --to (see export-onnx)")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("export-onnx", help="write MODEL/model.onnx for the onnxruntime CPU path (checked "
                                           "against PyTorch); Predictor then uses it")
    s.add_argument("model", help="checkpoint folder, e.g. checkpoints/face68-300w")
    s.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx: int8 calibrated on training faces, measured on the "
                        "validation split, used by default when within 0.1 NME points of float32")
    s.add_argument("--data-root", help="folder holding the task's data, for --int8 (default: $KPCORE_DATA or ./data)")
    s.set_defaults(func=_cmd_export_onnx)

    s = sub.add_parser("bench", help="accuracy, latency and throughput of the shipped models")
    s.add_argument("--json", help="write the results here (default: benchmarks/bench.json)")
    s.add_argument("--data-root", help=data_root_help)
    s.add_argument("--quick", action="store_true", help="fewer repetitions")
    s.add_argument("--sections", default="models,speed,video,mtfl",
                   help="comma-separated: models (accuracy, latency, training of every shipped model), speed "
                        "(ms/face PyTorch vs ONNX vs dlib, photo split, detection recall), video (kpcore track "
                        "fps, jitter, NME), mtfl (the model and dlib on MTFL val, per head pose), batch (photos/s of "
                        "kpcore predict's engines vs dlib and MediaPipe on 1,000 photos, then 4,000); rows of sections "
                        "not run are kept")
    s.add_argument("--model", help="checkpoint for the speed and video sections (default: checkpoints/face68-300w)")
    s.add_argument("--threads", type=_count(1), help="CPU threads (default 2)")
    s.set_defaults(func=_cmd_bench)

    s = sub.add_parser("track", help="keypoints on every frame of a video, tracked and smoothed, to CSV")
    s.add_argument("video", help="any video file OpenCV reads (mp4, avi, mkv, webm, y4m...)")
    s.add_argument("--csv", required=True, metavar="OUT.csv",
                   help="required: write frame,face,point,x,y rows here")
    s.add_argument("--video", dest="video_out", help="also write the annotated video here (.mp4, H.264)")
    s.add_argument("--model", default="face68-300w", help="checkpoint folder or name (default: face68-300w)")
    s.add_argument("--no-smooth", action="store_true", help="raw per-frame points (no One Euro filter)")
    s.add_argument("--min-cutoff", type=float, default=OneEuroDefaults.min_cutoff,
                   help="One Euro cutoff at rest, Hz (lower: steadier, more lag)")
    s.add_argument("--beta", type=float, default=OneEuroDefaults.beta,
                   help="One Euro speed coefficient (higher: less lag in motion)")
    s.add_argument("--d-cutoff", type=float, default=OneEuroDefaults.d_cutoff, help="One Euro speed cutoff, Hz")
    s.add_argument("--detect-every", type=_count(0), default=30,
                   help="frames between searches for new faces (0: only when no face is tracked)")
    s.add_argument("--threads", type=_count(1), help="CPU threads for the model (default: all cores)")
    s.set_defaults(func=_cmd_track)

    s = sub.add_parser("push", help="push a checkpoint folder to the Hugging Face Hub")
    s.add_argument("model_dir")
    s.add_argument("repo_id")
    s.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    s.add_argument("--private", action="store_true")
    s.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="seconds to wait for the Hub to answer one request before giving up (default: 60)")
    s.set_defaults(func=_cmd_push)

    s = sub.add_parser("predict", help="faces and points of one photo (printed), or of many photos, folders and "
                                       "videos (a table: --out faces.parquet)")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photos, folders (searched recursively), globs ('photos/**/*.jpg'), .txt lists of paths, "
                        "videos (tracked frame by frame); an optional checkpoint folder or shipped name first")
    s.add_argument("--out", metavar="TABLE", help=_TABLE_HELP + "; needed for more than one photo. Resumable: "
                   "re-run the same command after an interruption to finish it")
    s.add_argument("--model", default=DEFAULT_PREDICT_MODEL,
                   help=f"checkpoint folder, shipped name or Hub repo id (default: {DEFAULT_PREDICT_MODEL})")
    s.add_argument("--workers", type=int,
                   help="processes on this machine (local) or actors (ray), the cores split between them "
                        "(default: one per core, one thread each)")
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local processes, or Ray Data (a cluster in $RAY_ADDRESS, else a local Ray)")
    s.add_argument("--min-confidence", type=float, metavar="C",
                   help="mark faces whose keypoint confidence is below C (0..1) as status low_confidence")
    s.add_argument("--min-score", type=float, metavar="S", help="face detector score threshold (0..1)")
    s.add_argument("--detector", choices=["cascade", "retinaface"], default="cascade",
                   help="cascade: BlazeFace, RetinaFace where it is unsure (fast; a small face beside a large "
                        "one is not looked for); retinaface: every face, slower (default: cascade)")
    s.add_argument("--chunk-size", type=int,
                   help=f"inputs per chunk written to <out>.parts/ (a kill loses at most the chunks in flight; "
                        f"default {BATCH_CHUNK}, {RAY_CHUNK} on Ray)")
    s.add_argument("--overwrite", action="store_true",
                   help="start the table afresh (default: keep its rows and add the inputs it lacks)")
    s.add_argument("--json", metavar="OUT", help="one photo: write the faces as compact JSON here ('-': to stdout)")
    s.add_argument("--csv", metavar="OUT", help="one photo: write one row per point here")
    s.add_argument("--overlay", metavar="OUT.png", help="one photo: write it with the points, boxes and pose drawn")
    s.add_argument("--whole-image", action="store_true",
                   help="if no face is found, place the points on the whole image instead of failing")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("align", help="FFHQ-style aligned face crops (eyes and mouth of the 68 points) and an "
                                     "index table")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, folders, globs or .txt lists (as predict)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the crops (PNG) and index.parquet")
    s.add_argument("--size", type=int, default=1024, help="side of the square crops in pixels (default 1024)")
    s.add_argument("--min-confidence", type=float, default=0.5, metavar="C",
                   help="skip faces whose keypoint confidence is below C (default 0.5)")
    s.add_argument("--model", default=DEFAULT_PREDICT_MODEL, help="a 68-point checkpoint (default: %(default)s)")
    s.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet",
                   help="the index table's format (default parquet)")
    s.set_defaults(func=_cmd_align)
    return p


DEBUG_ENV = "KPCORE_DEBUG"
"""Set to 1 for the traceback of an unexpected error instead of its one-line summary."""


def _count(least: int):
    """An argparse type: an integer >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is too small; give {least} or more")
        return value
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} s: give a positive number of seconds")
    return value


def _describe_os_error(e: OSError) -> str:
    """An OSError in words, with what to do."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"the disk is full{' writing' + where if where else ''}; free some space and run again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write or read{where} ({e.strerror}); choose another folder or fix its permissions"
    if e.errno is None or not e.strerror:  # raised by kpcore with its own message
        return str(e)
    return f"{e.strerror}:{where}" + ("; check the path" if e.errno in (errno.ENOENT, errno.ENOTDIR) else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KpcoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # a package of an extra the light install leaves out (kpcore.extras)
        from .extras import explain_import_error

        missing = explain_import_error(e, f"kpcore {args.command}")
        if missing is None:
            raise
        print(f"error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a missing or unreadable file, a full disk, a folder that cannot be written
        print(f"error: {_describe_os_error(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # kpcore's checks of an input raise ValueError (see kpcore.errors)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: kpcore {args.command} failed unexpectedly ({type(e).__name__}: {str(e)[:300]}); rerun "
              f"with {DEBUG_ENV}=1 for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
