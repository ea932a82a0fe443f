// kpcore's tracking rules in JavaScript: the browser's copy of kpcore/live/track.py (Tracker),
// kpcore/live/smoothing.py (OneEuroFilter, FaceFilter), the crop geometry of kpcore/data/geometry.py
// and BlazeFace's decoding of kpcore/live/detect.py (BlazeFaceDetector, weighted_nms, map_box).
//
// Pure functions and classes, no DOM and no model: webcam.mjs gives the Tracker two functions
// (detect, predict) that run the ONNX models in onnxruntime-web. tests/test_webcam_js.py exports
// fixtures from the Python implementation and runs tracker.test.mjs (node --test) on them, so the
// two copies are one set of rules: change both together.
//
// Conventions as in Python: a box or region is [left, top, width, height] in edge coordinates
// (pixel i spans [i, i + 1)); points are [x, y] pixel centres.

export const DETECT_EVERY = 30;
export const LOST_SHIFT = 0.35;
export const LOST_SCALE = [0.6, 1.6];
export const DRIFT_SCALE = [0.5, 2.0];
export const MATCH_IOU = 0.3;
export const DEFAULT_FPS = 30.0;

// ------------------------------------------------------------------ geometry
/** The tight box around points (geometry.points_box). */
export function pointsBox(points) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of points) {
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return [x0 - 0.5, y0 - 0.5, x1 - x0 + 1, y1 - y0 + 1];
}

/** A box moved and scaled by a fitted map {dx, dy, sw, sh} (calibrate.box_to_region). */
export function boxToRegion(box, map) {
  const [left, top, w, h] = box;
  const cx = left + w / 2 + map.dx * w, cy = top + h / 2 + map.dy * h;
  const rw = map.sw * w, rh = map.sh * h;
  return [cx - rw / 2, cy - rh / 2, rw, rh];
}

/** The training crop of a face box without a fitted map (InputSpec.crop_box, box mode). */
export function enlargeBox(box, factor, aspect) {
  let [left, top, width, height] = box;
  const cx = left + width / 2, cy = top + height / 2;
  if (width / height < aspect) width = height * aspect; else height = width / aspect;
  width *= factor;
  height *= factor;
  return [cx - width / 2, cy - height / 2, width, height];
}

/** The crop for a face whose points are `points` (Tracker.region_from_points). */
export function regionFromPoints(points, model) {
  const box = pointsBox(points);
  const [left, top, w, h] = model.pointsBoxMap ? boxToRegion(box, model.pointsBoxMap)
    : enlargeBox(box, model.enlarge, model.width / model.height);
  const side = Math.sqrt(w * h), cx = left + w / 2, cy = top + h / 2;
  const aspect = model.width / model.height;
  return [cx - side * aspect / 2, cy - side / 2, side * aspect, side];
}

/** The input region for a detector box (Predictor.detector_region). */
export function detectorRegion(box, model) {
  return model.detectorBoxMap ? boxToRegion(box, model.detectorBoxMap)
    : enlargeBox(box, model.enlarge, model.width / model.height);
}

/** Model output in [-1, 1] of a crop of `region` resized to width x height -> image pixels
 * (geometry.uncrop of crop_matrix(region, size)). `coords` is flat [x0, y0, x1, y1, ...]. */
export function decodePoints(coords, region, width, height) {
  const [left, top, rw, rh] = region;
  const sx = width / rw, sy = height / rh;
  const out = [];
  for (let k = 0; k < coords.length / 2; k++) {
    const u = ((coords[2 * k] + 1) * width - 1) / 2, v = ((coords[2 * k + 1] + 1) * height - 1) / 2;
    out.push([(u + 0.5) / sx + left - 0.5, (v + 0.5) / sy + top - 0.5]);
  }
  return out;
}

export function iou(a, b) {
  const iw = Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih, union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

/** Whether a face is lost: its new region moved or resized too much in one frame (Tracker._lost). */
export function lost(old, next) {
  const shift = Math.hypot(next[0] + next[2] / 2 - old[0] - old[2] / 2, next[1] + next[3] / 2 - old[1] - old[3] / 2);
  const scale = next[2] / old[2];
  return shift > LOST_SHIFT * old[2] || !(LOST_SCALE[0] <= scale && scale <= LOST_SCALE[1]);
}

// ------------------------------------------------------------------ BlazeFace
/** Where a width x height frame sits in the detector's size x size square (detect.letterbox):
 * {left, top, newW, newH, sx, sy}; an edge coordinate u of the square is (u - left) * sx in the frame. */
export function letterbox(width, height, size) {
  const factor = size / Math.max(width, height);
  const newW = Math.max(1, Math.round(width * factor)), newH = Math.max(1, Math.round(height * factor));
  const left = Math.floor((size - newW) / 2), top = Math.floor((size - newH) / 2);
  return {left, top, newW, newH, sx: width / newW, sy: height / newH};
}

/** Anchor centres (x, y) as fractions of the input, flat (detect.ssd_anchors). */
export function ssdAnchors(inputSize, layers) {
  const out = [];
  for (const [stride, perCell] of layers) {
    const cells = Math.ceil(inputSize / stride);
    for (let y = 0; y < cells; y++) {
      for (let x = 0; x < cells; x++) {
        for (let a = 0; a < perCell; a++) out.push((x + 0.5) / cells, (y + 0.5) / cells);
      }
    }
  }
  return Float64Array.from(out);
}

/** MediaPipe's WEIGHTED non-maximum suppression (detect.weighted_nms) over boxes [x1, y1, x2, y2]. */
export function weightedNms(boxes, scores, iouThreshold) {
  let order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  const area = (b) => Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
  const out = [];
  while (order.length) {
    const i = order[0], bi = boxes[i];
    const overlaps = order.map((j) => {
      const bj = boxes[j];
      const iw = Math.max(0, Math.min(bi[2], bj[2]) - Math.max(bi[0], bj[0]));
      const ih = Math.max(0, Math.min(bi[3], bj[3]) - Math.max(bi[1], bj[1]));
      const union = area(bi) + area(bj) - iw * ih;
      return union > 0 ? iw * ih / union : 0;
    });
    let group = order.filter((_, n) => overlaps[n] > iouThreshold);
    if (!group.length) group = [i];
    const total = group.reduce((s, j) => s + scores[j], 0);
    const box = [0, 0, 0, 0];
    for (const j of group) for (let c = 0; c < 4; c++) box[c] += boxes[j][c] * scores[j] / total;
    out.push({box, score: scores[i]});
    order = order.filter((j, n) => overlaps[n] <= iouThreshold && j !== i);
  }
  return out;
}

/** BlazeFace's faces from its raw outputs (BlazeFaceDetector.detect without the network):
 * `rows` flat (N x 16), `logits` (N), `lb` = letterbox(width, height, inputSize).
 * Returns [{box: [left, top, width, height] (BlazeFace's own box, clipped), score}], best first. */
export function decodeBlazeFace(rows, logits, anchors, inputSize, lb, width, height, threshold, nmsIou) {
  const cut = threshold >= 1 ? Infinity : threshold <= 0 ? -Infinity : Math.log(threshold / (1 - threshold));
  const boxes = [], scores = [];
  for (let i = 0; i < logits.length; i++) {
    if (!(logits[i] >= cut)) continue;
    const r = 16 * i;
    const cx = rows[r] + anchors[2 * i] * inputSize, cy = rows[r + 1] + anchors[2 * i + 1] * inputSize;
    const hw = rows[r + 2] / 2, hh = rows[r + 3] / 2;
    boxes.push([cx - hw, cy - hh, cx + hw, cy + hh]);
    scores.push(1 / (1 + Math.exp(-Math.min(100, Math.max(-100, logits[i])))));
  }
  const clip = (v, upper) => Math.min(Math.max(v, 0), upper);
  const faces = [];
  for (const {box, score} of weightedNms(boxes, scores, nmsIou)) {
    const x1 = clip((box[0] - lb.left) * lb.sx, width), x2 = clip((box[2] - lb.left) * lb.sx, width);
    const y1 = clip((box[1] - lb.top) * lb.sy, height), y2 = clip((box[3] - lb.top) * lb.sy, height);
    if (x2 <= x1 || y2 <= y1) continue;
    faces.push({box: [x1, y1, x2 - x1, y2 - y1], score});
  }
  return faces;
}

/** A box moved and scaled by a median map, clipped to the image (detect.map_box): BlazeFace's box
 * onto RetinaFace's convention, which the landmark checkpoint's detector_box_map was fitted on. */
export function mapBox(box, map, width, height) {
  const [left, top, w, h] = box;
  const cx = left + w / 2 + map.dx * w, cy = top + h / 2 + map.dy * h;
  const nw = map.sw * w, nh = map.sh * h;
  const clip = (v, upper) => Math.min(Math.max(v, 0), upper);
  const x1 = clip(cx - nw / 2, width), x2 = clip(cx + nw / 2, width);
  const y1 = clip(cy - nh / 2, height), y2 = clip(cy + nh / 2, height);
  return [x1, y1, x2 - x1, y2 - y1];
}

// ------------------------------------------------------------------ smoothing
export const POSE_PARAMS = {minCutoff: 2.0, beta: 300.0, dCutoff: 1.0};
export const SHAPE_PARAMS = {minCutoff: 0.5, beta: 10.0, dCutoff: 1.0};

const alpha = (cutoff, dt) => 1 / (1 + 1 / (2 * Math.PI * cutoff) / dt);

/** The One Euro filter over a flat array, element-wise (smoothing.OneEuroFilter). */
export class OneEuroFilter {
  constructor(params = POSE_PARAMS) { this.params = params; this.reset(); }

  reset() { this.x = null; this.dx = null; this.t = null; }

  filter(x, t, scale = 1) {
    if (this.x === null) {
      this.x = Float64Array.from(x);
      this.dx = new Float64Array(x.length);
      this.t = t;
      return Float64Array.from(x);
    }
    const dt = t - this.t;
    if (dt <= 0) return Float64Array.from(this.x);
    const p = this.params, ad = alpha(p.dCutoff, dt), s = Math.max(scale, 1e-9);
    for (let i = 0; i < x.length; i++) {
      const d = (x[i] - this.x[i]) / dt / s;
      this.dx[i] += ad * (d - this.dx[i]);
      this.x[i] += alpha(p.minCutoff + p.beta * Math.abs(this.dx[i]), dt) * (x[i] - this.x[i]);
    }
    this.t = t;
    return Float64Array.from(this.x);
  }
}

/** A face's motion (similarity pose) and shape filtered apart (smoothing.FaceFilter). */
export class FaceFilter {
  constructor(pose = POSE_PARAMS, shape = SHAPE_PARAMS) {
    this.pose = new OneEuroFilter(pose);
    this.shape = new OneEuroFilter(shape);
    this.ref = null;
    this.radius = 0;
  }

  filter(points, t, scale = 1) {
    const n = points.length;
    let mx = 0, my = 0;
    for (const [x, y] of points) { mx += x; my += y; }
    mx /= n; my /= n;
    const zr = points.map(([x]) => x - mx), zi = points.map(([, y]) => y - my);
    if (this.ref === null) {
      let r2 = 0;
      for (let k = 0; k < n; k++) r2 += zr[k] * zr[k] + zi[k] * zi[k];
      const radius = Math.sqrt(r2 / n);
      if (radius < 1e-6) return points.map((p) => [p[0], p[1]]);
      this.ref = [zr, zi];
      this.radius = radius;
    }
    const [rr, ri] = this.ref;
    // similarity = vdot(ref, z) / vdot(ref, ref) = sum(conj(ref) * z) / sum(|ref|^2)
    let sr = 0, si = 0, rn = 0;
    for (let k = 0; k < n; k++) {
      sr += rr[k] * zr[k] + ri[k] * zi[k];
      si += rr[k] * zi[k] - ri[k] * zr[k];
      rn += rr[k] * rr[k] + ri[k] * ri[k];
    }
    sr /= rn; si /= rn;
    const mag2 = sr * sr + si * si;
    if (Math.sqrt(mag2) < 1e-9) return points.map((p) => [p[0], p[1]]);
    const shape = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {  // z / similarity
      shape[2 * k] = (zr[k] * sr + zi[k] * si) / mag2;
      shape[2 * k + 1] = (zi[k] * sr - zr[k] * si) / mag2;
    }
    const pose = this.pose.filter([mx, my, sr * this.radius, si * this.radius], t, scale);
    const smooth = this.shape.filter(shape, t, scale);
    const pr = pose[2] / this.radius, pi = pose[3] / this.radius;
    const out = [];
    for (let k = 0; k < n; k++) {
      const a = smooth[2 * k], b = smooth[2 * k + 1];
      out.push([a * pr - b * pi + pose[0], a * pi + b * pr + pose[1]]);
    }
    return out;
  }
}

// ------------------------------------------------------------------ the tracker
/**
 * Follows faces from frame to frame (track.Tracker): call `update` once per frame.
 *
 * `model`: {width, height, enlarge, pointsBoxMap, detectorBoxMap} of the landmark checkpoint.
 * `update(t, hooks)` takes hooks = {detect(): [{box, score}] face boxes in the landmark
 * checkpoint's detector convention, predict(regions): one [[x, y], ...] per region}; each may
 * return a Promise. It returns {faces: [{id, points, rawPoints, region, detected}], detectorRan}.
 */
export class Tracker {
  constructor(model, {smooth = true, detectEvery = DETECT_EVERY, maxFaces = null,
    pose = POSE_PARAMS, shape = SHAPE_PARAMS} = {}) {
    if (!(detectEvery >= 0)) throw new Error(`detectEvery must be >= 0 frames; got ${detectEvery}`);
    Object.assign(this, {model, smooth, detectEvery, maxFaces, pose, shape});
    this.tracks = [];
    this.nextId = 0;
    this.frames = 0;
    this.sinceDetect = 0;
  }

  reset() { this.tracks = []; this.sinceDetect = 0; }

  async detectRegions(hooks) {
    const faces = [...await hooks.detect()];
    faces.sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);  // stable, as Python's sorted
    const kept = this.maxFaces === null ? faces : faces.slice(0, this.maxFaces);
    return kept.map((f) => detectorRegion(f.box, this.model));
  }

  async update(t, hooks) {
    t = t ?? this.frames / DEFAULT_FPS;
    this.frames += 1;
    let detectorRan = false;
    let fresh = new Set();
    if (!this.tracks.length || (this.detectEvery && this.sinceDetect >= this.detectEvery)) {
      detectorRan = true;
      fresh = this.merge(await this.detectRegions(hooks), true, []);
    }
    const results = await this.predict(hooks, t, this.tracks, fresh);
    const lostTracks = this.tracks.filter((_, i) => results[i] === null);
    let out = results.filter((f) => f !== null);
    if (lostTracks.length) {
      this.tracks = this.tracks.filter((_, i) => results[i] !== null);
      if (!detectorRan) {  // look again on this frame; a face found where one was lost keeps its id
        detectorRan = true;
        fresh = this.merge(await this.detectRegions(hooks), false, lostTracks);
        const added = this.tracks.filter((tr) => fresh.has(tr.id));
        const again = await this.predict(hooks, t, added, fresh);
        const dropped = new Set(added.filter((_, i) => again[i] === null).map((tr) => tr.id));
        this.tracks = this.tracks.filter((tr) => !dropped.has(tr.id));
        out = out.concat(again.filter((f) => f !== null));
      }
    }
    this.sinceDetect = detectorRan ? 0 : this.sinceDetect + 1;
    out.sort((a, b) => a.id - b.id);
    return {faces: out, detectorRan};
  }

  merge(regions, dropUnconfirmed, revive) {
    const kept = [], used = new Set();
    for (const tr of this.tracks) {
      let best = [0, -1];
      regions.forEach((r, i) => {
        if (used.has(i)) return;
        const v = iou(tr.region, r);
        if (v > best[0] || (v === best[0] && i > best[1] && best[1] >= 0)) best = [v, i];
      });
      if (best[0] >= MATCH_IOU) {
        used.add(best[1]);
        tr.anchor = regions[best[1]][2];
        kept.push(tr);
      } else if (!dropUnconfirmed) {
        kept.push(tr);
      }
    }
    const fresh = new Set();
    regions.forEach((r, i) => {
      if (used.has(i) || (this.maxFaces !== null && kept.length >= this.maxFaces)) return;
      let old = null, oldIou = -1;
      for (const tr of revive) {
        const v = iou(tr.region, r);
        if (v > oldIou) { old = tr; oldIou = v; }
      }
      let id;
      if (old !== null && oldIou >= MATCH_IOU && !fresh.has(old.id)) id = old.id;
      else id = this.nextId++;
      kept.push({id, region: [...r], points: null, smooth: null, anchor: r[2]});
      fresh.add(id);
    });
    this.tracks = kept;
    return fresh;
  }

  async predict(hooks, t, tracks, detectedIds) {
    if (!tracks.length) return [];
    const regions = tracks.map((tr) => tr.region);
    const pts = await hooks.predict(regions);
    return tracks.map((tr, i) => {
      const region = regions[i], p = pts[i];
      const next = regionFromPoints(p, this.model);
      const drift = next[2] / tr.anchor;
      if (!p.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) || lost(region, next) ||
          !(DRIFT_SCALE[0] <= drift && drift <= DRIFT_SCALE[1])) return null;
      let shown = p;
      if (this.smooth) {
        if (tr.smooth === null) tr.smooth = new FaceFilter(this.pose, this.shape);
        shown = tr.smooth.filter(p, t, region[2]);
      }
      tr.points = shown;
      tr.region = regionFromPoints(shown, this.model);
      return {id: tr.id, points: shown, rawPoints: p, region, detected: detectedIds.has(tr.id)};
    });
  }
}

/** The landmark checkpoint's facts the tracker needs, from its config.json. */
export function modelFromConfig(config) {
  return {
    width: config.input.width, height: config.input.height, enlarge: config.input.crop?.enlarge ?? 1.0,
    mean: config.input.mean, std: config.input.std, numPoints: config.num_keypoints,
    pointsBoxMap: config.points_box_map ?? null, detectorBoxMap: config.detector_box_map ?? null,
  };
}
