// tracker.mjs against kpcore's Python implementation: `node --test webapp/static/webcam/tracker.test.mjs`.
// The fixtures come from tests/test_webcam_js.py (run it with pytest: it writes them and runs this file
// with KPCORE_TRACKER_FIXTURES set). Without them, the parity tests are skipped with a hint.
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {test} from 'node:test';

import {
  FaceFilter, Tracker, decodeBlazeFace, decodePoints, detectorRegion, letterbox, mapBox, modelFromConfig,
  regionFromPoints, ssdAnchors, weightedNms,
} from './tracker.mjs';

const TOLERANCE = 1e-3;  // pixels (the Python side rounds its shown points to float32)
const path = process.env.KPCORE_TRACKER_FIXTURES;
const fx = path ? JSON.parse(readFileSync(path, 'utf8')) : null;
const parity = {skip: fx ? false : 'no fixtures: run `python -m pytest tests/test_webcam_js.py`, which writes them'};

function close(actual, expected, what, tol = TOLERANCE) {
  const a = actual.flat(Infinity), e = expected.flat(Infinity);
  assert.equal(a.length, e.length, `${what}: ${a.length} values, expected ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - e[i]) <= tol,
      `${what}[${i}] = ${a[i]}, Python gives ${e[i]}`);
  }
}

test('letterbox and anchors match kpcore.live.detect', parity, () => {
  for (const {size: [w, h], expected} of fx.letterbox) {
    const lb = letterbox(w, h, 128);
    close([lb.left, lb.top, lb.sx, lb.sy], expected, `letterbox ${w}x${h}`, 1e-12);
  }
  close([...ssdAnchors(fx.anchors.size, fx.anchors.layers)], fx.anchors.expected, 'anchors', 1e-6);
});

test('crop geometry matches Tracker.region_from_points, detector_region and geometry.uncrop', parity, () => {
  const model = modelFromConfig(fx.model.config);
  const noMap = {...model, pointsBoxMap: null, detectorBoxMap: null};
  for (const [i, g] of fx.geometry.entries()) {
    close(regionFromPoints(g.points, model), g.region_from_points, `region_from_points ${i}`);
    close(regionFromPoints(g.points, noMap), g.region_from_points_no_map, `region_from_points (no map) ${i}`);
    close(detectorRegion(g.box, model), g.detector_region, `detector_region ${i}`);
    close(decodePoints(g.coords, g.region, model.width, model.height), g.decoded, `uncrop ${i}`);
  }
});

test('BlazeFace decoding matches BlazeFaceDetector.detect on the same network outputs', parity, () => {
  const b = fx.blazeface;
  const anchors = ssdAnchors(fx.anchors.size, fx.anchors.layers);
  for (const [i, c] of b.cases.entries()) {
    const lb = letterbox(c.width, c.height, b.input_size);
    close([lb.left, lb.top, lb.sx, lb.sy], c.letterbox, `letterbox ${i}`, 1e-12);
    const faces = decodeBlazeFace(c.rows, c.logits, anchors, b.input_size, lb, c.width, c.height, b.threshold, b.nms_iou);
    assert.equal(faces.length, c.faces.length, `case ${i}: ${faces.length} faces, Python finds ${c.faces.length}`);
    close(faces.map((f) => f.box), c.faces.map((f) => f.box), `boxes ${i}`);
    close(faces.map((f) => f.score), c.faces.map((f) => f.score), `scores ${i}`, 1e-6);
    close(faces.map((f) => mapBox(f.box, b.to_retinaface, c.width, c.height)), c.mapped, `map_box ${i}`);
  }
  const n = fx.weighted_nms;
  const merged = weightedNms(n.boxes, n.scores, n.iou);
  assert.equal(merged.length, n.expected.length);
  close(merged.map((m) => [...m.box, m.score]), n.expected.map((m) => [...m.box, m.score]), 'weighted_nms', 1e-9);
});

test('FaceFilter matches kpcore.live.smoothing.FaceFilter', parity, () => {
  const s = fx.smoothing, f = new FaceFilter();
  s.points.forEach((p, i) => close(f.filter(p, s.times[i], s.scale), s.expected[i], `frame ${i}`));
});

/** The fake landmark model of tests/test_webcam_js.py (fake_points). */
function fakePoints(region, truth, shape, garbage, pull) {
  const rc = [region[0] + region[2] / 2, region[1] + region[3] / 2];
  let best = null, dist = Infinity;
  for (const f of truth) {
    const d = Math.hypot(f.cx - rc[0], f.cy - rc[1]);
    if (d < dist) { best = f; dist = d; }
  }
  if (best === null || dist > region[2] / 2) return shape.map(([x, y]) => [rc[0] + garbage * region[2] * x, rc[1] + garbage * region[2] * y]);
  return shape.map(([x, y]) => [best.cx + pull * (rc[0] - best.cx) + best.s * x, best.cy + pull * (rc[1] - best.cy) + best.s * y]);
}

test('Tracker makes the Python Tracker\'s decisions and points on a scripted scene', parity, async () => {
  const t = fx.tracker, model = modelFromConfig(fx.model.config);
  for (const run of t.runs) {
    const tracker = new Tracker(model, run.options);
    for (const [i, frame] of t.frames.entries()) {
      const hooks = {
        detect: async () => frame.detections.map((box) => ({box, score: 0.9})),
        predict: async (regions) => regions.map((r) => fakePoints(r, frame.truth, t.shape, t.garbage_scale, t.pull)),
      };
      const got = await tracker.update(frame.t, hooks), want = run.expected[i];
      const what = `${JSON.stringify(run.options)} frame ${i}`;
      assert.equal(got.detectorRan, want.detectorRan, `${what}: detector ran`);
      assert.deepEqual(got.faces.map((f) => f.id), want.faces.map((f) => f.id), `${what}: face ids`);
      assert.deepEqual(got.faces.map((f) => f.detected), want.faces.map((f) => f.detected), `${what}: detected`);
      close(got.faces.map((f) => f.region), want.faces.map((f) => f.region), `${what}: regions`);
      close(got.faces.map((f) => f.points), want.faces.map((f) => f.points), `${what}: points`);
    }
  }
});

// Without fixtures too: the checks that need no Python
test('a tracker refuses a negative detectEvery', () => {
  assert.throws(() => new Tracker(modelFromConfig({input: {width: 128, height: 128}, num_keypoints: 68}), {detectEvery: -1}),
    /detectEvery must be >= 0/);
});

test('the first FaceFilter call returns its input, and a still face stays still', () => {
  const pts = [[10, 10], [30, 12], [20, 30]], f = new FaceFilter();
  close(f.filter(pts, 0, 20), pts, 'first');
  close(f.filter(pts, 1 / 30, 20), pts, 'still', 1e-9);
});
