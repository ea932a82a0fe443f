// The Webcam tab's in-browser path: the camera is read here (getUserMedia), kpcore's tracker
// (tracker.mjs, the rules of kpcore/live/track.py) runs here with onnxruntime-web (WebAssembly,
// one thread), and the points are drawn on a canvas with the frame they belong to. No frame
// leaves the browser. Figures shown: frames drawn per second and the delay from a frame's
// capture to its points on screen; window.__kpWebcam keeps them for scripts/webcam_fps.py.
import * as ort from '../ort/ort.wasm.min.mjs';
import {Tracker, decodeBlazeFace, decodePoints, letterbox, mapBox, modelFromConfig, ssdAnchors} from './tracker.mjs';

const MODELS = new URL('../models/', import.meta.url);
const LANDMARKS = 'face68-300w';
const DETECTOR = 'face-detector-blazeface';
const SIZE = [640, 480];  // asked of the camera, as the server stream does
const EDGES = [[0, 16], [17, 21], [22, 26], [27, 30], [31, 35], [36, 41, true], [42, 47, true], [48, 59, true], [60, 67, true]];
const STATS_WINDOW_MS = 1000;

const probe = {ready: false, error: null, drawn: [], detectorRuns: 0, frames: 0};
window.__kpWebcam = probe;
const $ = (id) => document.getElementById(id);

function fail(message) {
  probe.error = message;
  $('error').textContent = message;
  $('error').style.display = 'block';
}

async function loadJson(path) {
  const r = await fetch(new URL(path, MODELS));
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

let engine = null;
async function loadEngine() {
  ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a Space's iframe lacks
  ort.env.wasm.wasmPaths = new URL('../ort/', import.meta.url).href;
  const [config, detConfig] = await Promise.all([loadJson(`${LANDMARKS}/config.json`), loadJson(`${DETECTOR}/config.json`)]);
  const variant = detConfig.variants[detConfig.default_variant];
  const options = {executionProviders: ['wasm'], graphOptimizationLevel: 'all'};
  // one after the other: the single-threaded wasm backend fails on two sessions created at once
  const landmarks = await ort.InferenceSession.create(new URL(`${LANDMARKS}/model.onnx`, MODELS).href, options);
  const detector = await ort.InferenceSession.create(new URL(`${DETECTOR}/${variant.file}`, MODELS).href, options);
  return {
    model: modelFromConfig(config), landmarks, detector,
    det: {size: variant.input_size, anchors: ssdAnchors(variant.input_size, variant.anchors),
      threshold: detConfig.defaults.score_threshold, nmsIou: detConfig.defaults.nms_iou, toRetina: detConfig.to_retinaface},
  };
}

function canvas(w, h) {
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  return [c, c.getContext('2d', {willReadFrequently: true})];
}

/** The hooks the tracker calls on one frame (already drawn on `frame`). */
function hooks(e, frame, width, height, scratch, timing) {
  return {
    async detect() {
      const t0 = performance.now();
      const {size, anchors, threshold, nmsIou, toRetina} = e.det;
      const lb = letterbox(width, height, size);
      const [, ctx] = scratch.det;
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, size, size);
      ctx.drawImage(frame, 0, 0, width, height, lb.left, lb.top, lb.newW, lb.newH);
      const px = ctx.getImageData(0, 0, size, size).data, n = size * size;
      const input = new Float32Array(3 * n);
      for (let i = 0; i < n; i++) {
        input[3 * i] = px[4 * i];
        input[3 * i + 1] = px[4 * i + 1];
        input[3 * i + 2] = px[4 * i + 2];
      }
      const r = await e.detector.run({image: new ort.Tensor('float32', input, [1, size, size, 3])});
      const faces = decodeBlazeFace(r.regressors.data, r.classificators.data, anchors, size, lb, width, height,
        threshold, nmsIou);
      probe.detectorRuns++;
      timing.detect += performance.now() - t0;
      // BlazeFace's boxes in RetinaFace's convention, as kpcore's CascadeDetector returns them
      return faces.map((f) => ({box: mapBox(f.box, toRetina, width, height), score: f.score}));
    },
    async predict(regions) {
      const t0 = performance.now();
      const {width: w, height: h, mean, std} = e.model;
      const [, ctx] = scratch.crop, n = w * h;
      const out = [];
      for (const [left, top, rw, rh] of regions) {
        ctx.clearRect(0, 0, w, h);  // outside the frame: zeros, as kpcore's warp pads
        ctx.drawImage(frame, left, top, rw, rh, 0, 0, w, h);
        const px = ctx.getImageData(0, 0, w, h).data;
        const input = new Float32Array(3 * n);
        for (let c = 0; c < 3; c++) {
          const scale = 1 / (255 * std[c]), offset = -mean[c] / std[c];
          for (let i = 0; i < n; i++) input[c * n + i] = px[4 * i + c] * scale + offset;
        }
        const r = await e.landmarks.run({image: new ort.Tensor('float32', input, [1, 3, h, w])});
        out.push(decodePoints(r.coords.data, [left, top, rw, rh], w, h));
      }
      timing.predict += performance.now() - t0;
      return out;
    },
  };
}

function draw(ctx, frame, faces, width, height) {
  ctx.drawImage(frame, 0, 0, width, height);
  for (const f of faces) {
    const p = f.points, radius = Math.max(1.5, f.region[2] / 110);
    ctx.strokeStyle = 'rgb(0, 200, 255)';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const [a, b, closed] of EDGES) {
      if (b >= p.length) continue;
      ctx.moveTo(p[a][0], p[a][1]);
      for (let k = a + 1; k <= b; k++) ctx.lineTo(p[k][0], p[k][1]);
      if (closed) ctx.lineTo(p[a][0], p[a][1]);
    }
    ctx.stroke();
    ctx.fillStyle = 'rgb(255, 40, 40)';
    ctx.beginPath();
    for (const [x, y] of p) { ctx.moveTo(x + radius, y); ctx.arc(x, y, radius, 0, 2 * Math.PI); }
    ctx.fill();
    ctx.fillStyle = 'rgb(255, 255, 0)';
    ctx.font = '14px sans-serif';
    const x0 = Math.min(...p.map((q) => q[0])), y0 = Math.min(...p.map((q) => q[1]));
    ctx.fillText(`#${f.id}`, Math.max(0, x0), Math.max(12, y0 - 6));
  }
}

let running = null;

async function start() {
  $('start').disabled = true;
  $('error').style.display = 'none';
  try {
    $('stats').textContent = 'Loading the models (7.8 MB) and onnxruntime-web (11 MB)...';
    engine = engine || await loadEngine();
    const video = $('camera');
    const stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: {ideal: SIZE[0]}, height: {ideal: SIZE[1]}}, audio: false});
    video.srcObject = stream;
    await video.play();
    const width = video.videoWidth, height = video.videoHeight;
    const out = $('out');
    out.width = width;
    out.height = height;
    const outCtx = out.getContext('2d');
    const [frame, frameCtx] = canvas(width, height);
    const scratch = {det: canvas(engine.det.size, engine.det.size), crop: canvas(engine.model.width, engine.model.height)};
    const tracker = new Tracker(engine.model);
    const state = {stream, stopped: false, recent: []};
    running = state;
    $('stop').disabled = false;
    probe.ready = true;
    // A frame that arrives while the last one is being tracked waits as `pending` (only the newest),
    // so the next one starts as soon as the last is drawn instead of at the next camera frame.
    let pending = null, busy = false;
    const track = async (meta) => {
      const t0 = performance.now();
      frameCtx.drawImage(video, 0, 0, width, height);  // the frame the points belong to
      const timing = {detect: 0, predict: 0};
      const clock = (meta.captureTime ?? meta.presentationTime ?? t0) / 1000;
      const {faces} = await tracker.update(clock, hooks(engine, frame, width, height, scratch, timing));
      draw(outCtx, frame, faces, width, height);
      const done = performance.now();
      const since = meta.captureTime ?? meta.presentationTime ?? meta.expectedDisplayTime ?? t0;
      probe.frames++;
      probe.drawn.push([done, done - since, done - t0, timing.predict, timing.detect, meta.presentedFrames, faces.length]);
      if (probe.drawn.length > 3000) probe.drawn.splice(0, 1000);
      state.recent.push([done, done - since]);
      while (state.recent.length && state.recent[0][0] < done - STATS_WINDOW_MS) state.recent.shift();
      if (probe.frames % 10 === 0) {
        const delays = state.recent.map((r) => r[1]).sort((x, y) => x - y);
        $('stats').textContent = `${state.recent.length} frames/s drawn · delay ${delays[delays.length >> 1].toFixed(0)} ms ` +
          `(capture -> points) · ${faces.length} face(s) · landmarks ${timing.predict.toFixed(0)} ms`;
      }
    };
    const pump = async () => {
      busy = true;
      try {
        while (pending && !state.stopped) {
          const meta = pending;
          pending = null;
          await track(meta);
        }
      } catch (err) {
        fail(`tracking stopped: ${err}`);
        stop();
      }
      busy = false;
    };
    const onFrame = (now, meta) => {
      if (state.stopped) return;
      pending = meta;
      video.requestVideoFrameCallback(onFrame);
      if (!busy) pump();
    };
    video.requestVideoFrameCallback(onFrame);
  } catch (err) {
    const name = err && err.name;
    fail(name === 'NotAllowedError' ? 'The camera was not allowed: allow it in the browser, then press Start camera.'
      : name === 'NotFoundError' ? 'No camera found: plug one in, then press Start camera.'
        : `Could not start: ${err}. Try the "on the server" mode of the Webcam tab.`);
    $('start').disabled = false;
  }
}

function stop() {
  if (running) {
    running.stopped = true;
    for (const t of running.stream.getTracks()) t.stop();
    running = null;
  }
  $('start').disabled = false;
  $('stop').disabled = true;
}

$('start').addEventListener('click', start);
$('stop').addEventListener('click', stop);
// The button is disabled in the HTML until this module (and onnxruntime-web, which it imports)
// has loaded: a click before then would have had no listener and done nothing.
$('start').disabled = false;
$('start').removeAttribute('title');
if (new URLSearchParams(location.search).has('autostart')) start();
