"""Fire N concurrent ``/predict`` calls at the live demo and print how it coped.

    python scripts/load_test_live.py --url http://127.0.0.1:7860/gradio/ --n 20 --photo face.jpg

Each request runs in its own thread with its own ``gradio_client.Client`` (one
browser tab each; ``--shared-client`` sends them all through one client). The
clients are connected first, then a barrier lets every request go at once.
Every ``--bad-every``-th request uploads a broken file (text renamed ``.jpg``,
a truncated JPEG, a 1x1 PNG, in turn) whose kpcore error message is known; the
others upload the ``--photo`` files in turn and must get at least one face with
points back. Printed: answered / errors / expected errors, median and max
latency (from the call to its answer), total wall time. Exit code 0 when every
request got the expected answer, 1 otherwise. An answer that the demo is busy
(its queue is bounded: webapp/serving.py) is counted apart; it is not the expected answer.

A soak: ``--rounds R`` sends R such bursts one after the other, and
``--count-files DIR`` (repeatable) prints how many files and MB lie under a
folder of the server (same machine) before and after, e.g. Gradio's upload
folder (``$GRADIO_TEMP_DIR``) and the demo's own ``<tmp>/kpcore_live``::

    python scripts/load_test_live.py --url http://127.0.0.1:7860/gradio/ --n 20 --rounds 15 \
        --photo face.jpg --count-files /tmp/gradio --count-files /tmp/kpcore_live

Against an app started with ``streamlit run app.py`` the Gradio part lives
under ``/gradio/``; a bare ``python -m webapp.live`` serves it at ``/``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_N = 20
DEFAULT_BAD_EVERY = 5
"""One request in five uploads a broken file."""
REQUEST_TIMEOUT_S = 300.0
"""Longest wait for one answer; the queue runs one prediction at a time by default."""
NOISE_SIDE = 200
BUSY_MARKERS = ("Queue is full", "is busy", "currently busy", "waiting or running")
"""How a full queue's answer reads (gradio_client's words for HTTP 503, the demo's for 429)."""


@dataclass(frozen=True)
class Upload:
    """One file to send, and what must come back: points, or an error containing ``expect_error``."""

    path: Path
    expect_error: str | None = None

    @property
    def label(self) -> str:
        return self.path.name


@dataclass
class Outcome:
    """What one request got back."""

    upload: Upload
    seconds: float
    error: str | None = None  # the error message, when the call raised
    faces: int = 0
    points: int = 0  # points per face

    @property
    def busy(self) -> bool:
        """The demo answered that it is busy (a bounded queue), not with points or an error about the file."""
        return self.error is not None and any(m in self.error for m in BUSY_MARKERS)

    @property
    def correct(self) -> bool:
        if self.upload.expect_error is None:
            return self.error is None and self.faces > 0 and self.points > 0
        return self.error is not None and self.upload.expect_error in self.error


@dataclass
class LoadReport:
    """All outcomes of one run, in request order, and the wall time from the barrier to the last answer."""

    outcomes: list[Outcome]
    wall_s: float
    clients: str
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Requests that got an answer: points, or an error message from the app."""
        return sum(o.error is None or not o.error.startswith("no answer:") for o in self.outcomes)

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.outcomes)

    @property
    def expected_errors(self) -> int:
        return sum(o.error is not None and o.correct for o in self.outcomes)

    @property
    def wrong(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.correct]

    @property
    def latencies(self) -> list[float]:
        return [o.seconds for o in self.outcomes]

    def lines(self) -> list[str]:
        lat = self.latencies
        n = len(self.outcomes)
        out = [
            f"requests: {n} concurrent ({self.clients})",
            f"answered: {self.answered}/{n}",
            f"errors: {self.errors} (expected: {self.expected_errors}, unexpected: "
            f"{self.errors - self.expected_errors})",
            f"correct: {n - len(self.wrong)}/{n}",
            f"busy answers: {sum(o.busy for o in self.outcomes)}",
            f"latency: median {statistics.median(lat):.2f} s, max {max(lat):.2f} s, min {min(lat):.2f} s",
            f"wall time: {self.wall_s:.2f} s ({n / self.wall_s:.2f} requests/s)",
        ]
        for o in self.wrong:
            want = f"error containing {o.upload.expect_error!r}" if o.upload.expect_error else "points"
            got = repr(o.error) if o.error else f"{o.faces} face(s) x {o.points} points"
            out.append(f"WRONG {o.upload.label}: wanted {want}, got {got}")
        return out + self.notes


def bad_uploads(folder: Path) -> list[Upload]:
    """Write the broken files to ``folder``; each comes with a piece of kpcore's message for it."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.jpg"
    text.write_bytes(b"this is not a picture\n" * 10)
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (NOISE_SIDE, NOISE_SIDE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    cut = folder / "truncated.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    pixel = folder / "pixel.png"
    Image.new("RGB", (1, 1), (200, 150, 120)).save(pixel)
    return [Upload(text, "not an image in a supported format"),
            Upload(cut, "truncated or corrupt"),
            Upload(pixel, "1x1 pixels")]  # "...; kpcore needs at least 32x32"


def plan(photos: Sequence[Path], bad: Sequence[Upload], n: int, bad_every: int) -> list[Upload]:
    """``n`` uploads: photos in turn, with a bad file in every ``bad_every``-th place (0: none)."""
    if not photos:
        raise ValueError("give at least one photo with a face (--photo)")
    uploads, i_photo, i_bad = [], 0, 0
    for i in range(n):
        if bad and bad_every > 0 and (i + 1) % bad_every == 0:
            uploads.append(bad[i_bad % len(bad)])
            i_bad += 1
        else:
            uploads.append(Upload(Path(photos[i_photo % len(photos)])))
            i_photo += 1
    return uploads


def _count_points(json_path: str) -> tuple[int, int]:
    faces = json.loads(Path(json_path).read_text())["faces"]
    return len(faces), (len(faces[0]["points"]) if faces else 0)


def _call(client, upload: Upload, api_name: str, timeout: float) -> Outcome:
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        job = client.submit(handle_file(str(upload.path)), api_name=api_name)
        _, json_path, _, _ = job.result(timeout=timeout)
    except TimeoutError:
        return Outcome(upload, time.perf_counter() - start, error=f"no answer: timed out after {timeout:.0f} s")
    except Exception as e:  # noqa: BLE001 - AppError carries the app's message; others are failures too
        message = str(e) or type(e).__name__
        answered = type(e).__name__ in ("AppError", "QueueError")  # QueueError: "Queue is full! ..."
        return Outcome(upload, time.perf_counter() - start,
                       error=message if answered else f"no answer: {type(e).__name__}: {message}")
    faces, points = _count_points(json_path)
    return Outcome(upload, time.perf_counter() - start, faces=faces, points=points)


def run_load_test(url: str, photos: Sequence[Path], n: int = DEFAULT_N, bad_every: int = DEFAULT_BAD_EVERY,
                  shared_client: bool = False, api_name: str = "/predict",
                  timeout: float = REQUEST_TIMEOUT_S, workdir: Path | None = None) -> LoadReport:
    """Send ``n`` concurrent predictions to the Gradio app at ``url``; see the module docstring."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="kpcore_load_") as tmp:
        root = Path(workdir or tmp)
        uploads = plan(photos, bad_uploads(root / "bad"), n, bad_every)

        def connect(i: int) -> Client:
            return Client(url, verbose=False, download_files=str(root / f"answers{i}"))

        connected = time.perf_counter()
        if shared_client:
            clients = [connect(0)] * n
        else:
            with ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
                clients = list(pool.map(connect, range(n)))
        connect_s = time.perf_counter() - connected
        barrier = threading.Barrier(n + 1)

        def worker(i: int) -> Outcome:
            barrier.wait()
            return _call(clients[i], uploads[i], api_name, timeout)

        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(worker, i) for i in range(n)]
            barrier.wait()
            start = time.perf_counter()
            outcomes = [f.result() for f in futures]
            wall = time.perf_counter() - start
        for client in {id(c): c for c in clients}.values():
            client.close()
    kind = "one shared client" if shared_client else f"{n} clients, connected in {connect_s:.1f} s"
    return LoadReport(outcomes, wall, kind)


def folder_usage(folder: Path) -> tuple[int, float]:
    """``(files, MB)`` under ``folder`` (0, 0 when it does not exist)."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the Gradio app, e.g. http://127.0.0.1:7860/gradio/")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"concurrent requests (default {DEFAULT_N})")
    p.add_argument("--photo", action="append", required=True, type=Path,
                   help="a photo with a face (repeatable; used in turn)")
    p.add_argument("--bad-every", type=int, default=DEFAULT_BAD_EVERY,
                   help=f"every k-th request uploads a broken file (default {DEFAULT_BAD_EVERY}; 0: none)")
    p.add_argument("--shared-client", action="store_true", help="one gradio_client.Client for all threads")
    p.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds to wait for one answer")
    p.add_argument("--rounds", type=int, default=1, help="bursts of --n requests, one after the other (a soak)")
    p.add_argument("--count-files", action="append", default=[], type=Path, metavar="DIR",
                   help="print the files and MB under this server folder before and after (repeatable)")
    args = p.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        p.error(f"--n and --rounds must be at least 1; got {args.n} and {args.rounds}")
    missing = [str(ph) for ph in args.photo if not ph.is_file()]
    if missing:
        p.error(f"photo not found: {', '.join(missing)}")
    before = {d: folder_usage(d) for d in args.count_files}
    wrong = 0
    for i in range(args.rounds):
        report = run_load_test(args.url, args.photo, args.n, args.bad_every, args.shared_client,
                               timeout=args.timeout)
        if args.rounds > 1:
            print(f"--- round {i + 1}/{args.rounds}")
        print("\n".join(report.lines()))
        wrong += len(report.wrong)
    for d, (files, mb) in before.items():
        after = folder_usage(d)
        print(f"{d}: {files} files ({mb:.1f} MB) before, {after[0]} files ({after[1]:.1f} MB) after")
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
