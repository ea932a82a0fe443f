"""Measure the demo's Webcam tab: frames drawn per second in the page, the delay to the points, ms per frame.

    python scripts/webcam_fps.py clip /tmp/face.y4m              # a 30 fps 640x480 fake-camera clip (138 MB)
    python scripts/webcam_fps.py handler /tmp/face.y4m           # the stream handler's ms per frame, in-process
    python scripts/webcam_fps.py server /tmp/face.y4m --url http://127.0.0.1:8501/gradio/  # served, no browser
    python scripts/webcam_fps.py browser /tmp/face.y4m --runs 3  # starts the app, headless Chromium
    python scripts/webcam_fps.py browser-tracker /tmp/face.y4m   # the Webcam tab's in-browser tracker

(The other commands write the clip first when it is missing.)

**The clip** is a real face (an IMM photo from ``$KPCORE_DATA``, else the
shipped astronaut) under a slow zoom and pan, 10 s that Chromium's fake camera
(``--use-file-for-fake-video-capture``) loops. A bar code of black and white
blocks along its top edge (the server's label is at the bottom) numbers every
frame, with a white block on the left and a black one on the right, so it reads
in a mirrored frame too.

**browser** starts ``streamlit run app.py`` on a free port (or uses ``--url``),
opens ``/gradio/`` in headless Chromium with the clip as its camera, picks "on
the server" and presses Record on the Webcam tab and, after a warm-up, reads in the page over ``--seconds``:

* ``drawn_fps``: loads of the "Tracked keypoints" image showing a camera frame
  not shown before (its bar code), per second; ``sent_fps``: frames the page posted;
  ``camera_fps``: frames the page's own camera preview presented;
* ``delay_ms``: from the moment a camera frame appeared in the page's camera
  preview (``requestVideoFrameCallback``, bar code read there) to the moment the
  image with its points had loaded (median, p90, max);
* ``cpu_ms_per_drawn_frame``: CPU time of Chromium's processes and of the
  server (its pid: the app started here, or the one listening on ``--url``'s port).

**browser-model** measures the alternative of issue 17: the checkpoint's ONNX
model run in the page by onnxruntime-web (1 wasm thread) on each camera frame,
points drawn on a canvas; no detector and no tracking rules, so a lower bound.

**browser-tracker** measures the Webcam tab as shipped ("in this browser"):
the demo's page ``webapp/static/webcam/`` in its iframe, the camera read there,
kpcore's tracker in JavaScript (BlazeFace when needed, the 68-point model every
frame, onnxruntime-web, 1 wasm thread), points drawn with their frame on a
canvas. From the page's own records over ``--seconds``: ``drawn_fps`` (frames
drawn with their points), ``camera_fps`` (frames the camera presented),
``delay_ms`` from the frame's capture (``requestVideoFrameCallback``'s
``captureTime``) to its points drawn, model and detector ms, CPU per drawn frame
(browser and server), the share of frames with a face.

**server** joins the stream through Gradio's queue API and posts the clip's frames
with one in flight (the next when the last answer came): the served stream's
frames per second and round trip without a browser. **handler** times the
stream handler alone. Every figure is printed with the load average
(``/proc/loadavg``): on a shared machine only figures of one run compare.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 640, 480, 30
CLIP_SECONDS = 10
BAR_BLOCKS = 12
"""Blocks in the bar code: a white marker, 10 bits of the frame number, a black marker."""
BAR_HEIGHT = 24
SERVER_START_TIMEOUT_S = 180
MATCH_FRAMES = 3
"""A drawn frame whose own number the preview skipped is timed from a preview frame at most this many before."""
LOOP_GUARD_MS = CLIP_SECONDS * 1000 / 2
"""Only preview frames this recent count (the clip loops, so a number comes back every CLIP_SECONDS)."""
WARMUP_S = 4.0
"""Seconds of streaming before counting starts (the model loads on the first frame)."""
PAGE_TIMEOUT_MS = 120_000
"""How long a page may take to load, start and draw (a loaded machine; ``latency_ms``)."""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------ the clip
def default_photo() -> Path:
    data = os.environ.get("KPCORE_DATA")
    if data and (Path(data) / "imm_face_db" / "01-1m.jpg").is_file():
        return Path(data) / "imm_face_db" / "01-1m.jpg"
    return REPO / "webapp" / "examples" / "astronaut.jpg"


def bar_code(index: int) -> np.ndarray:
    """The bar code strip (``BAR_HEIGHT`` x ``WIDTH``, RGB) that numbers frame ``index`` (mod 1024)."""
    bits = [1] + [(index >> b) & 1 for b in range(10)] + [0]
    strip = np.zeros((BAR_HEIGHT, WIDTH, 3), np.uint8)
    edges = np.linspace(0, WIDTH, BAR_BLOCKS + 1).round().astype(int)
    for bit, a, b in zip(bits, edges[:-1], edges[1:], strict=True):
        strip[:, a:b] = 255 * bit
    return strip


def read_bar_code(strip: np.ndarray) -> int | None:
    """The frame number in a bar code strip (either orientation), or None when it is not one."""
    gray = strip.mean(axis=(0, 2)) if strip.ndim == 3 else strip.mean(axis=0)
    width = gray.shape[0]
    centres = ((np.arange(BAR_BLOCKS) + 0.5) * width / BAR_BLOCKS).astype(int)
    bits = [int(gray[c] > 127) for c in centres]
    if bits[0] == 0 and bits[-1] == 1:
        bits = bits[::-1]
    if bits[0] != 1 or bits[-1] != 0:
        return None
    return sum(bit << b for b, bit in enumerate(bits[1:-1]))


def clip_frames(photo: Path, seconds: float = CLIP_SECONDS) -> Iterator[np.ndarray]:
    """RGB frames: ``photo`` filling 640x480, zoomed 1.0 -> 1.3 -> 1.0 and panned, one loop in ``seconds``."""
    import cv2
    from PIL import Image

    image = np.asarray(Image.open(photo).convert("RGB"))
    scale = max(WIDTH / image.shape[1], (HEIGHT - BAR_HEIGHT) / image.shape[0])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    n = int(seconds * FPS)
    for i in range(n):
        phase = np.sin(np.pi * i / n)  # 0 -> 1 -> 0 over the loop, so the loop has no jump
        zoom = 1.0 + 0.3 * phase
        dx = 30 * np.sin(2 * np.pi * i / n)
        cx, cy = image.shape[1] / 2 + dx, image.shape[0] / 2
        m = np.array([[zoom, 0, WIDTH / 2 - zoom * cx], [0, zoom, (HEIGHT - BAR_HEIGHT) / 2 - zoom * cy]])
        frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        frame[BAR_HEIGHT:] = cv2.warpAffine(image, m, (WIDTH, HEIGHT - BAR_HEIGHT),
                                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame[:BAR_HEIGHT] = bar_code(i)
        yield frame


def write_y4m(path: Path, frames: Iterator[np.ndarray]) -> int:
    """Write RGB frames as a 4:2:0 YUV4MPEG2 file (what Chromium's fake camera reads); returns the count."""
    import cv2

    count = 0
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
            count += 1
    return count


def read_y4m(path: Path) -> Iterator[np.ndarray]:
    """RGB frames of a file written by :func:`write_y4m`."""
    import cv2

    frame_bytes = WIDTH * HEIGHT * 3 // 2
    with open(path, "rb") as f:
        f.readline()
        while f.readline():
            yuv = np.frombuffer(f.read(frame_bytes), np.uint8).reshape(HEIGHT * 3 // 2, WIDTH)
            yield cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


def make_clip(out: Path, photo: Path | None = None) -> Path:
    count = write_y4m(out, clip_frames(photo or default_photo()))
    print(f"{out}: {count} frames, {WIDTH}x{HEIGHT} at {FPS} fps, from {photo or default_photo()}")
    return out


# ---------------------------------------------------------------- the handler
def jpeg_data_url(frame: np.ndarray, quality: int = 92) -> str:
    """A frame as Gradio's webcam sends it: ``canvas.toDataURL("image/jpeg")`` (quality 0.92)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def time_handler(clip: Path, frames: int = 150) -> dict:
    """ms per frame of the Webcam tab's stream handler on the clip's frames sent as JPEG data URLs."""
    from webapp import live_video

    urls = [jpeg_data_url(f) for f, _ in zip(read_y4m(clip), range(frames), strict=False)]
    session = None
    _, session = live_video.webcam_frame({"url": urls[0]}, session)  # loads the model
    totals = []
    for url in urls:
        t0 = time.perf_counter()
        _, session = live_video.webcam_frame({"url": url}, session)
        totals.append((time.perf_counter() - t0) * 1000)
    totals.sort()
    result = {"frames": len(totals), "median_ms": statistics.median(totals),
              "p90_ms": totals[int(0.9 * (len(totals) - 1))], "load": load_average()}
    print(json.dumps(result))
    return result



def time_server(url: str, clip: Path, frames: int = 150) -> dict:
    """The served stream without a browser: one frame in flight, the next sent when the last one's answer came.

    Joins the Webcam tab's stream through Gradio's queue API (as the page does) and
    posts the clip's frames as JPEG data URLs to ``/stream/<event id>``. Round trip
    ms per frame = the server's whole cost per frame (HTTP, queue, handler, answer).
    """
    import uuid

    import httpx

    base = url.rstrip("/")
    config = httpx.get(base + "/config", timeout=30).json()
    dep = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "webcam_frame")
    fn_index = config["dependencies"][dep].get("id", dep)
    trigger = config["dependencies"][dep]["targets"][0][0]
    urls = [jpeg_data_url(f) for f, _ in zip(read_y4m(clip), range(frames), strict=False)]
    session = uuid.uuid4().hex
    body = {"fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": trigger}
    with httpx.Client(timeout=60) as client:
        event_id = client.post(base + "/gradio_api/queue/join",
                               json={**body, "data": [{"url": urls[0]}, None]}).json()["event_id"]
        times, sent = [], 0
        with client.stream("GET", base + "/gradio_api/queue/data", params={"session_hash": session}) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    raise RuntimeError(f"the stream ended: {str(message)[:300]}")
                if message.get("msg") != "process_streaming":
                    continue
                times.append(time.perf_counter())
                sent += 1
                if sent > len(urls):
                    break
                client.post(f"{base}/gradio_api/stream/{event_id}",
                            json={**body, "data": [{"url": urls[sent % len(urls)]}, None]})
        client.post(f"{base}/gradio_api/stream/{event_id}/close")
    gaps = sorted(np.diff(times[5:]) * 1000)  # the first frames load the model
    result = {"frames": len(gaps), "frames_per_s": round(1000 / statistics.mean(gaps), 1),
              "round_trip_ms_median": round(statistics.median(gaps), 1),
              "round_trip_ms_p90": round(gaps[int(0.9 * (len(gaps) - 1))], 1), "load": load_average()}
    print(json.dumps(result))
    return result


# ---------------------------------------------------------------- the browser
PAGE_PROBE = """
() => {
  const probe = {cam: [], shown: [], errors: 0};
  window.__webcamProbe = probe;
  const canvas = document.createElement('canvas');
  canvas.width = %(width)d; canvas.height = 8;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  function read(el, w, h) {  // the bar code along the top edge, either orientation
    if (!w || !h) return null;
    const rows = h * %(bar)d / %(height)d;
    ctx.drawImage(el, 0, rows * 0.25, w, rows / 2, 0, 0, canvas.width, canvas.height);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const bits = [];
    for (let b = 0; b < %(blocks)d; b++) {
      const x = Math.floor((b + 0.5) * canvas.width / %(blocks)d);
      let sum = 0;
      for (let y = 0; y < canvas.height; y++) { const i = (y * canvas.width + x) * 4; sum += px[i] + px[i + 1] + px[i + 2]; }
      bits.push(sum / (3 * canvas.height) > 127 ? 1 : 0);
    }
    if (bits[0] === 0 && bits[bits.length - 1] === 1) bits.reverse();
    if (bits[0] !== 1 || bits[bits.length - 1] !== 0) return null;
    let n = 0;
    for (let b = 1; b < bits.length - 1; b++) n |= bits[b] << (b - 1);
    return n;
  }
  const video = document.querySelector('#kp-camera video');
  const onFrame = () => {
    try { probe.cam.push([performance.now(), read(video, video.videoWidth, video.videoHeight)]); }
    catch (e) { probe.errors++; }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const watched = new WeakSet();
  const watch = () => {
    for (const img of document.querySelectorAll('#kp-camera-out img')) {
      if (watched.has(img)) continue;
      watched.add(img);
      img.addEventListener('load', () => {
        try { probe.shown.push([performance.now(), read(img, img.naturalWidth, img.naturalHeight)]); }
        catch (e) { probe.errors++; }
      });
    }
  };
  watch();
  new MutationObserver(watch).observe(document.querySelector('#kp-camera-out'), {subtree: true, childList: true});
}
""" % {"width": WIDTH, "height": HEIGHT, "bar": BAR_HEIGHT, "blocks": BAR_BLOCKS}  # noqa: UP031 (JS braces)


def summarise(cam: list, shown: list, posts: list, start: float, seconds: float) -> dict:
    """Drawn frames per second and delays from the page's records (times in ms, page clock)."""
    end = start + seconds * 1000
    window = [(t, i) for t, i in shown if start <= t < end]
    drawn, last = [], None
    for t, i in window:
        if i is not None and i != last:
            drawn.append((t, i))
        last = i
    loop = CLIP_SECONDS * FPS
    delays = []
    for t, i in drawn:
        # the camera preview may skip a frame: take the latest one shown at most MATCH_FRAMES before it
        seen = [(tc, (i - ic) % loop) for tc, ic in cam
                if ic is not None and t - LOOP_GUARD_MS <= tc <= t and (i - ic) % loop <= MATCH_FRAMES]
        if seen:
            tc, behind = max(seen)
            delays.append(t - (tc + behind * 1000 / FPS))
    delays.sort()
    camera = [t for t, i in cam if start <= t < end and i is not None]
    return {
        "seconds": seconds,
        "camera_fps": round(len(camera) / seconds, 1),
        "sent_fps": round(sum(start <= t < end for t in posts) / seconds, 1),
        "image_loads_per_s": round(len(window) / seconds, 1),
        "drawn_fps": round(len(drawn) / seconds, 1),
        "unreadable": sum(i is None for _, i in window),
        "delay_ms_median": round(statistics.median(delays)) if delays else None,
        "delay_ms_p90": round(delays[int(0.9 * (len(delays) - 1))]) if delays else None,
        "delay_ms_max": round(delays[-1]) if delays else None,
    }


def launch_with_camera(playwright, clip: Path):
    """Debian's headless Chromium with ``clip`` (y4m) as a camera the page may use without asking."""
    return playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}"])


def measure_page(url: str, clip: Path, seconds: float, screenshot: Path | None = None,
                 server_pid: int | None = None) -> dict:
    """One headless Chromium with ``clip`` as its camera on the demo at ``url`` (``.../gradio/``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_with_camera(p, clip)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            posts: list[float] = []
            page.expose_function("__webcamPost", lambda t: posts.append(t))
            page.add_init_script("""
              const _fetch = window.fetch;
              window.fetch = function(input, init) {
                const u = typeof input === 'string' ? input : (input && input.url) || '';
                if (/\\/stream\\/[^/]+$/.test(u) && init && init.method === 'POST') window.__webcamPost(performance.now());
                return _fetch.apply(this, arguments);
              };
            """)
            page.goto(url)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#kp-webcam-mode").get_by_text("on the server").click()  # the fallback view
            camera = page.locator("#kp-camera")
            camera.get_by_text("Click to Access Webcam").click()
            camera.locator("video").wait_for(state="visible")
            page.wait_for_function("document.querySelector('#kp-camera video').videoWidth > 0")
            page.evaluate(PAGE_PROBE)
            camera.get_by_text("Record").click()
            page.wait_for_function("window.__webcamProbe.shown.length > 0", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_timeout(WARMUP_S * 1000)
            start = page.evaluate("performance.now()")
            load_before = load_average()
            cpu_before = cpu_seconds(server_pid)
            page.wait_for_timeout(seconds * 1000)
            cpu_after = cpu_seconds(server_pid)
            probe = page.evaluate("window.__webcamProbe")
            if screenshot:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    result = summarise(probe["cam"], probe["shown"], posts, start, seconds)
    frames = max(1, round(result["drawn_fps"] * seconds))
    cpu = {k: round((cpu_after[k] - cpu_before[k]) * 1000 / frames, 1) for k in cpu_after}
    result.update(cpu_ms_per_drawn_frame=cpu, load_before=load_before, load_after=load_average(),
                  errors=probe["errors"])
    return result


def cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by this script's Chromium processes, and by the server when its pid is known."""
    import psutil

    def total(procs) -> float:
        seconds = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                seconds += t.user + t.system
            except psutil.Error:
                pass
        return seconds

    me = psutil.Process()
    out = {"browser": total(p for p in me.children(recursive=True) if "chrom" in p.name().lower())}
    if server_pid:
        out["server"] = total([psutil.Process(server_pid)])
    return out


def server_pid_for(url: str) -> int | None:
    """The pid listening on ``url``'s port on this machine, if it can be found."""
    import urllib.parse

    import psutil

    port = urllib.parse.urlsplit(url).port
    try:
        return next((c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                     and c.status == psutil.CONN_LISTEN), None)
    except psutil.Error:
        return None



# ------------------------------------------------- the alternative: in the browser
MODEL_PAGE = """<!doctype html><html><body style="margin:0">
<video id="v" playsinline muted style="display:none"></video><canvas id="out" width="640" height="480"></canvas>
<script src="ort.wasm.min.js"></script>
<script>
const probe = {runs: [], ready: false, error: null};
window.__probe = probe;
(async () => {
  try {
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a Space's iframe lacks
    const session = await ort.InferenceSession.create('model.onnx', {executionProviders: ['wasm']});
    const v = document.getElementById('v');
    v.srcObject = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}});
    await v.play();
    const out = document.getElementById('out').getContext('2d');
    const crop = document.createElement('canvas'); crop.width = crop.height = SIDE;
    const cctx = crop.getContext('2d', {willReadFrequently: true});
    const mean = MEAN, std = STD, n = SIDE * SIDE, input = new Float32Array(3 * n);
    const box = [170, 110, 300];  // a fixed square on the clip's face: the tracker would move it
    probe.ready = true;
    const step = async () => {
      const t0 = performance.now();
      cctx.drawImage(v, box[0], box[1], box[2], box[2], 0, 0, SIDE, SIDE);
      const px = cctx.getImageData(0, 0, SIDE, SIDE).data;
      for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) input[c * n + i] = (px[4 * i + c] / 255 - mean[c]) / std[c];
      const t1 = performance.now();
      const r = await session.run({[session.inputNames[0]]: new ort.Tensor('float32', input, [1, 3, SIDE, SIDE])});
      const t2 = performance.now();
      const xy = r[session.outputNames[0]].data;
      out.drawImage(v, 0, 0, 640, 480);
      out.fillStyle = '#ff2828';
      for (let k = 0; k < xy.length / 2; k++) {  // coordinates in [-1, 1] of the crop
        out.beginPath();
        out.arc(box[0] + (xy[2 * k] + 1) / 2 * box[2], box[1] + (xy[2 * k + 1] + 1) / 2 * box[2], 2.5, 0, 2 * Math.PI);
        out.fill();
      }
      probe.runs.push([t0, t1 - t0, t2 - t1, performance.now() - t2]);
      v.requestVideoFrameCallback(step);
    };
    v.requestVideoFrameCallback(step);
  } catch (e) { probe.error = String(e); }
})();
</script></body></html>
"""


def measure_model_in_page(clip: Path, ort_dist: Path, model: Path, seconds: float,
                          screenshot: Path | None = None) -> dict:
    """The per-frame work of a tracker in the page: crop, the checkpoint's ONNX model in onnxruntime-web, draw.

    ``ort_dist``: the ``dist/`` folder of the npm package ``onnxruntime-web`` (``npm pack onnxruntime-web``).
    No detector and no tracking rules: a lower bound on what running the tracker in the browser costs.
    """
    import http.server
    import shutil
    import threading
    from functools import partial

    from playwright.sync_api import sync_playwright

    config = json.loads((model.parent / "config.json").read_text())["input"]
    site = Path(tempfile.mkdtemp(prefix="webcam_fps_site_"))
    for name in ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
        shutil.copy(ort_dist / name, site / name)
    shutil.copy(model, site / "model.onnx")
    page = MODEL_PAGE.replace("SIDE", str(config["width"])).replace("MEAN", json.dumps(config["mean"]))
    (site / "index.html").write_text(page.replace("STD", json.dumps(config["std"])))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = launch_with_camera(p, clip)
            try:
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                tab.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
                tab.wait_for_function("window.__probe.ready || window.__probe.error", timeout=PAGE_TIMEOUT_MS)
                if tab.evaluate("window.__probe.error"):
                    raise RuntimeError(f"the page failed: {tab.evaluate('window.__probe.error')}")
                tab.wait_for_timeout(WARMUP_S * 1000)
                start, load_before, cpu_before = tab.evaluate("performance.now()"), load_average(), cpu_seconds(None)
                tab.wait_for_timeout(seconds * 1000)
                cpu_after = cpu_seconds(None)
                runs = [r for r in tab.evaluate("window.__probe.runs") if r[0] >= start]
                if screenshot:
                    tab.screenshot(path=str(screenshot))
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        shutil.rmtree(site, ignore_errors=True)
    n = max(1, len(runs))
    return {"model": model.name, "frames_per_s": round(len(runs) / seconds, 1),
            "prepare_ms": round(statistics.median(r[1] for r in runs), 1),
            "model_ms": round(statistics.median(r[2] for r in runs), 1),
            "draw_ms": round(statistics.median(r[3] for r in runs), 1),
            "browser_cpu_ms_per_frame": round((cpu_after["browser"] - cpu_before["browser"]) * 1000 / n, 1),
            "load_before": load_before, "load_after": load_average()}


def measure_tracker_page(url: str, clip: Path, seconds: float, screenshot: Path | None = None,
                         server_pid: int | None = None, latency_ms: float = 0) -> dict:
    """The Webcam tab's in-browser tracker in headless Chromium with ``clip`` as its camera (``url``: .../gradio/).

    ``latency_ms``: added to every request (Chromium's network emulation), as on a slow link or a busy server:
    the page must not take a click on *Start camera* before its script has loaded.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_with_camera(p, clip)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)  # every step below
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            if latency_ms:
                page.context.new_cdp_session(page).send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": latency_ms, "downloadThroughput": -1, "uploadThroughput": -1})
            page.goto(url)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#kp-webcam-browser iframe").wait_for(state="visible")
            frame = page.frame_locator("#kp-webcam-browser iframe")
            # enabled once the page's module (and onnxruntime-web) has loaded; click() waits for that
            frame.get_by_role("button", name="Start camera").click()
            inner = next(f for f in page.frames if f.url.endswith("/webcam/index.html"))
            try:
                inner.wait_for_function("window.__kpWebcam && (window.__kpWebcam.drawn.length > 0 || "
                                        "window.__kpWebcam.error)")
            except Exception as e:  # playwright's TimeoutError: say where the page stopped
                state = inner.evaluate("() => { const p = window.__kpWebcam || {}; return {ready: p.ready, "
                                       "frames: p.frames, detectorRuns: p.detectorRuns, error: p.error, "
                                       "stats: document.getElementById('stats').textContent}; }")
                raise RuntimeError(f"no frame drawn in {PAGE_TIMEOUT_MS / 1000:.0f} s: page state {state}; "
                                   f"console (last 20): {console[-20:]}") from e
            if inner.evaluate("window.__kpWebcam.error"):
                raise RuntimeError(f"the page failed: {inner.evaluate('window.__kpWebcam.error')}")
            page.wait_for_timeout(WARMUP_S * 1000)
            start = inner.evaluate("performance.now()")
            load_before, cpu_before = load_average(), cpu_seconds(server_pid)
            page.wait_for_timeout(seconds * 1000)
            cpu_after = cpu_seconds(server_pid)
            probe = inner.evaluate("window.__kpWebcam")
            if screenshot:
                page.screenshot(path=str(screenshot))  # the tab: the mode radio and the page in its iframe
        finally:
            browser.close()
    if probe["error"]:
        raise RuntimeError(f"the page failed: {probe['error']}")
    # rows: [drawn at, delay from capture, ms in the step, landmark ms, detector ms, presented frames, faces]
    rows = [r for r in probe["drawn"] if start <= r[0] < start + seconds * 1000]
    n = max(1, len(rows))
    delays = sorted(r[1] for r in rows)

    def pick(values: list[float], q: float) -> float | None:
        values = sorted(values)
        return round(values[int(q * (len(values) - 1))], 1) if values else None

    cpu = {k: round((cpu_after[k] - cpu_before[k]) * 1000 / n, 1) for k in cpu_after}
    return {"seconds": seconds, "drawn_fps": round(len(rows) / seconds, 1),
            "camera_fps": round((rows[-1][5] - rows[0][5]) / seconds, 1) if len(rows) > 1 else None,
            "delay_ms_median": pick(delays, 0.5), "delay_ms_p90": pick(delays, 0.9),
            "delay_ms_max": round(delays[-1], 1) if delays else None,
            "step_ms_median": pick([r[2] for r in rows], 0.5),
            "landmarks_ms_median": pick([r[3] for r in rows], 0.5),
            "detector_frames": sum(r[4] > 0 for r in rows),
            "detector_ms_median": pick([r[4] for r in rows if r[4] > 0], 0.5),
            "frames_with_a_face": round(sum(r[6] > 0 for r in rows) / n, 3),
            "cpu_ms_per_drawn_frame": cpu, "load_before": load_before, "load_after": load_average()}


def serve(log: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free 127.0.0.1 port; returns the process and the demo's URL."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio/", timeout=2) as r:
                if r.status == 200:
                    return proc, f"http://127.0.0.1:{port}/gradio/"
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"the app did not answer in {SERVER_START_TIMEOUT_S} s; see {log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clip", help="write the fake-camera clip (y4m)")
    c.add_argument("out", type=Path)
    c.add_argument("--photo", type=Path, help="a face photo (default: an IMM photo, else the astronaut)")
    h = sub.add_parser("handler", help="ms per frame of the stream handler, in this process")
    h.add_argument("clip", type=Path)
    h.add_argument("--frames", type=int, default=150)
    v = sub.add_parser("server", help="frames per second of the served stream, one in flight, no browser")
    v.add_argument("clip", type=Path)
    v.add_argument("--url", required=True, help="a running demo (.../gradio/)")
    v.add_argument("--frames", type=int, default=150)
    m = sub.add_parser("browser-model", help="the alternative: the model in the page (onnxruntime-web)")
    m.add_argument("clip", type=Path)
    m.add_argument("--ort-dist", type=Path, required=True, help="dist/ of the npm package onnxruntime-web")
    m.add_argument("--model", type=Path, default=REPO / "checkpoints" / "face68-300w" / "model.int8.onnx")
    m.add_argument("--seconds", type=float, default=10.0)
    m.add_argument("--runs", type=int, default=2)
    m.add_argument("--screenshot", type=Path)
    t = sub.add_parser("browser-tracker", help="the Webcam tab's in-browser tracker in headless Chromium")
    t.add_argument("clip", type=Path)
    t.add_argument("--url", help="a running demo (.../gradio/); default: start the app on a free port")
    t.add_argument("--seconds", type=float, default=12.0)
    t.add_argument("--runs", type=int, default=2)
    t.add_argument("--screenshot", type=Path, help="a screenshot of the tracker at the end of the last run")
    b = sub.add_parser("browser", help="frames drawn per second and delay in headless Chromium")
    b.add_argument("clip", type=Path)
    b.add_argument("--url", help="a running demo (.../gradio/); default: start the app on a free port")
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--screenshot", type=Path, help="a screenshot of the page at the end of the last run")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    if args.command == "clip":
        make_clip(args.out, args.photo)
        return 0
    if not args.clip.is_file():  # the clip is 138 MB of raw frames: made on demand, never committed
        make_clip(args.clip)
    if args.command == "handler":
        time_handler(args.clip, args.frames)
        return 0
    if args.command == "server":
        time_server(args.url, args.clip, args.frames)
        return 0
    if args.command == "browser-model":
        for run in range(args.runs):
            shot = args.screenshot if args.screenshot and run == args.runs - 1 else None
            result = measure_model_in_page(args.clip.resolve(), args.ort_dist, args.model, args.seconds, shot)
            print(json.dumps({"run": run + 1, **result}), flush=True)
        return 0
    proc, url = (None, args.url) if args.url else serve(Path(tempfile.gettempdir()) / "webcam_fps_server.log")
    pid = proc.pid if proc is not None else server_pid_for(url)
    try:
        for run in range(args.runs):
            shot = args.screenshot if args.screenshot and run == args.runs - 1 else None
            measure = measure_tracker_page if args.command == "browser-tracker" else measure_page
            result = measure(url, args.clip.resolve(), args.seconds, shot, pid)
            print(json.dumps({"run": run + 1, **result}), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
