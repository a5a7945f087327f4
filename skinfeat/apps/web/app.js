// The page of `skinfeat export --format web`: the model's TFLite backbone run by
// LiteRT.js (vendored, self-hosted Wasm), then its head (model/head.json and the
// float32 arrays of model/head.bin) in plain JavaScript. Images are decoded by the
// browser and resized as skinfeat.imaging.images resizes them (float32 steps mirrored with
// Math.fround). `?image=URL` predicts that image on load and fills
// <table id="predictions">; window.skinfeat exposes the same for automation.
import {loadLiteRt, loadAndCompile, Tensor} from "./vendor/litertjs/core.js";
import {decodeJpeg} from "./jpeg.js";

const f32 = Math.fround;
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- resizing (skinfeat/imaging/images.py)

// Rows [out][in] of tf.image.resize(antialias=True)'s triangle filter, kept sparse: {start, w}.
function weights(inSize, outSize) {
  const scale = f32(outSize / inSize), inv = f32(1 / scale), kernel = Math.max(inv, 1);
  const rows = [];
  for (let i = 0; i < outSize; i++) {
    const sample = f32((i + 0.5) * inv);
    let start = -1, w = [], total = 0;
    for (let j = 0; j < inSize; j++) {
      const v = Math.max(0, f32(1 - Math.abs(f32(f32(j + 0.5 - sample) / kernel))));
      if (v > 0) { if (start < 0) start = j; w.push(v); total += v; }
      else if (start >= 0) break;
    }
    rows.push({start: Math.max(start, 0), w: w.map((v) => f32(v / (total || 1)))});
  }
  return rows;
}

// image: {h, w, data: Float32Array h*w*3} -> resized to height x width (height first, as numpy).
function resizeExact(image, height, width) {
  const {h, w, data} = image;
  if (h === height && w === width) return image;
  const rows = weights(h, height), cols = weights(w, width);
  const mid = new Float32Array(height * w * 3);
  for (let i = 0; i < height; i++) {
    const {start, w: ws} = rows[i];
    for (let x = 0; x < w * 3; x++) {
      let s = 0;
      for (let k = 0; k < ws.length; k++) s += ws[k] * data[(start + k) * w * 3 + x];
      mid[i * w * 3 + x] = s;
    }
  }
  const out = new Float32Array(height * width * 3);
  for (let k = 0; k < width; k++) {
    const {start, w: ws} = cols[k];
    for (let i = 0; i < height; i++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let t = 0; t < ws.length; t++) s += ws[t] * mid[(i * w + start + t) * 3 + c];
        out[(i * width + k) * 3 + c] = s;
      }
    }
  }
  return {h: height, w: width, data: out};
}

// Zero-pad (or cut) image into height x width at top/left (centred when not given).
function padTo(image, height, width, top, left) {
  if (image.h === height && image.w === width) return image;
  top = top ?? Math.floor((height - image.h) / 2);
  left = left ?? Math.floor((width - image.w) / 2);
  const out = new Float32Array(height * width * 3);
  for (let y = 0; y < image.h; y++) {
    const ty = y + top;
    if (ty < 0 || ty >= height) continue;
    for (let x = 0; x < image.w; x++) {
      const tx = x + left;
      if (tx < 0 || tx >= width) continue;
      for (let c = 0; c < 3; c++) out[(ty * width + tx) * 3 + c] = image.data[(y * image.w + x) * 3 + c];
    }
  }
  return {h: height, w: width, data: out};
}

function crop(image, height, width) {
  const scale = Math.max(f32(height / image.h), f32(width / image.w));
  const scaled = resizeExact(image, Math.ceil(f32(image.h * scale)), Math.ceil(f32(image.w * scale)));
  const top = Math.max(Math.floor((scaled.h - height) / 2), 0), left = Math.max(Math.floor((scaled.w - width) / 2), 0);
  return padTo(scaled, height, width, -top, -left);
}

function pad(image, height, width) {
  const ratio = Math.max(f32(image.w / width), f32(image.h / height));
  const rh = f32(image.h / ratio), rw = f32(image.w / ratio);
  const resized = resizeExact(image, Math.floor(rh), Math.floor(rw));
  const top = Math.max(Math.floor(f32(f32(height - rh) / 2)), 0), left = Math.max(Math.floor(f32(f32(width - rw) / 2)), 0);
  return padTo(resized, height, width, top, left);
}

const RESIZERS = {squash: resizeExact, crop, pad};

// ---------------------------------------------------------------- decoding

const INV_255 = f32(1 / 255);

// A Blob -> {h, w, data}: RGB float32 in [0, 1]. JPEGs as predict decodes them (jpeg.js),
// other images (and JPEGs jpeg.js does not handle) by the browser: no colour management,
// alpha dropped. `decoder` says which.
async function decode(blob) {
  const jpeg = decodeJpeg(new Uint8Array(await blob.arrayBuffer()));
  if (jpeg) return {h: jpeg.h, w: jpeg.w, data: scaled(jpeg.rgb, 3), decoder: "skinfeat"};
  const bitmap = await createImageBitmap(blob, {colorSpaceConversion: "none", premultiplyAlpha: "none"}).catch(() => {
    throw new Error("is not an image this browser can decode, or a damaged one");
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return {h: bitmap.height, w: bitmap.width, data: scaled(rgba, 4), decoder: "browser"};
}

// uint8 pixels of `channels` channels -> RGB float32 * (1/255), as numpy does in float32.
function scaled(pixels, channels) {
  const n = pixels.length / channels, data = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) data[i * 3 + c] = f32(pixels[i * channels + c] * INV_255);
  }
  return data;
}

// The image size limits of skinfeat/imaging/images.py check_size (head.json "limits").
function checkSize({min_side, max_aspect, max_pixels}, image) {
  const {h, w} = image, size = `is ${w} x ${h} pixels`;
  if (w * h > max_pixels) throw new Error(`${size}, more than the ${max_pixels} pixels skinfeat decodes; downscale it`);
  if (Math.min(h, w) < min_side) throw new Error(`${size}, too small; expected at least ${min_side} pixels on each side`);
  if (Math.max(h, w) > max_aspect * Math.min(h, w)) {
    throw new Error(`${size}, too elongated; expected sides at most ${max_aspect} times as long as each other`);
  }
  return image;
}

// ---------------------------------------------------------------- the model

async function loadModel() {
  const [info, blob] = await Promise.all([
    fetch("model/head.json").then((r) => r.json()),
    fetch("model/head.bin").then((r) => r.arrayBuffer()),
  ]);
  const array = (name) => {
    const {offset, shape} = info.arrays[name];
    return {shape, data: new Float32Array(blob, offset, shape.reduce((a, b) => a * b, 1))};
  };
  const head = {mean: array("mean").data, scale: array("scale").data,
                layers: info.layers.map((l) => ({W: array(l.W), b: array(l.b).data, relu: l.relu}))};
  if (info.ood) {
    head.ood = {mean: array("ood_mean").data, scale: array("ood_scale").data, components: array("ood_components")};
  }
  await loadLiteRt(new URL("vendor/litertjs/", location.href).href);
  const backbone = await loadAndCompile(new URL("model/backbone.tflite", location.href).href, {accelerator: "wasm"});
  return {info, head, backbone};
}

function softmax(z) {
  const m = Math.max(...z), e = z.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// features -> {trained, adjusted, calibrated}: probabilities over CLASSES as trained, the
// decision scores (skinfeat.heads.inference) and the calibrated ones (skinfeat.core.calibration).
function headProba(model, features) {
  const {info, head} = model, p = info.power;
  let z = Array.from(features, (x, i) => {
    const v = p === 1 ? x : Math.sign(x) * Math.abs(x) ** p;
    return (v - head.mean[i]) / head.scale[i];
  });
  for (const {W, b, relu} of head.layers) {
    const [din, dout] = W.shape, out = Array.from(b);
    for (let i = 0; i < din; i++) {
      const zi = z[i];
      if (zi === 0) continue;
      for (let j = 0; j < dout; j++) out[j] += zi * W.data[i * dout + j];
    }
    z = relu ? out.map((v) => Math.max(v, 0)) : out;
  }
  const columns = softmax(z), trained = info.classes.map(() => 0);
  info.columns.forEach((c, k) => { trained[c] = columns[k]; });
  const logs = trained.map((q) => (q > 0 ? Math.log(q) : -Infinity));
  const adjusted = softmax(logs.map((v, i) => v + info.offsets[i]));
  const calibrated = softmax(logs.map((v) => v / info.temperature));
  return {trained, adjusted, calibrated};
}

// features -> the out-of-distribution score (skinfeat.core.ood): the norm of the standardised
// features' residual outside the training features' principal components; null for a model without one.
function oodScore(model, features) {
  const ood = model.head.ood;
  if (!ood) return null;
  const [din, k] = ood.components.shape, p = new Float64Array(k);
  let total = 0;
  for (let i = 0; i < din; i++) {
    const z = (features[i] - ood.mean[i]) / ood.scale[i];
    total += z * z;
    if (z === 0) continue;
    for (let j = 0; j < k; j++) p[j] += z * ood.components.data[i * k + j];
  }
  const inside = p.reduce((sum, v) => sum + v * v, 0);
  return Math.sqrt(Math.max(total - inside, 0));
}

async function features(model, resized) {
  const input = new Tensor(resized.data, [1, resized.h, resized.w, 3]);
  const outputs = await model.backbone.run(input);
  const out = outputs[0].toTypedArray().slice();
  input.delete();
  outputs.forEach((t) => t.delete());
  return out;
}

// A Blob -> {image (resized), decoder, trained, adjusted, calibrated, ms: decode to probabilities, phases: ms of each step}.
async function predict(model, blob) {
  const [height, width] = model.info.input_size, t = [performance.now()];
  const decoded = checkSize(model.info.limits, await decode(blob));
  t.push(performance.now());
  const resized = RESIZERS[model.info.resize](decoded, height, width);
  t.push(performance.now());
  const feats = await features(model, resized);
  t.push(performance.now());
  const proba = headProba(model, feats);
  const ood = oodScore(model, feats);
  t.push(performance.now());
  const phases = {decode: t[1] - t[0], resize: t[2] - t[1], backbone: t[3] - t[2], head: t[4] - t[3]};
  return {image: resized, decoder: decoded.decoder, ...proba, ood, ms: t[4] - t[0], phases};
}

// ---------------------------------------------------------------- the page

function show(model, result) {
  const {info} = model, {h, w, data} = result.image;
  const canvas = $("seen"), ctx = canvas.getContext("2d");
  canvas.width = w; canvas.height = h;
  const pixels = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let c = 0; c < 3; c++) pixels.data[i * 4 + c] = Math.round(Math.min(Math.max(data[i * 3 + c], 0), 1) * 255);
    pixels.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  const p = result.calibrated, order = info.classes.map((_, i) => i).sort((a, b) => p[b] - p[a]);
  const decided = info.classes.map((_, i) => i).reduce((a, b) => (result.adjusted[b] > result.adjusted[a] ? b : a));
  const row = (i) => `<tr data-class="${info.classes[i]}" data-probability="${p[i].toFixed(8)}" ` +
    `data-decision-score="${result.adjusted[i].toFixed(8)}" ` +
    `data-probability-as-trained="${result.trained[i].toFixed(8)}"><td>${info.full_names[i]} (${info.classes[i]})</td>` +
    `<td class="bar"><span style="width:${(100 * p[i]).toFixed(1)}%"></span></td>` +
    `<td>${(100 * p[i]).toFixed(1)}%</td></tr>`;
  $("decision").textContent = `${info.full_names[decided]} (${info.classes[decided]})`;
  $("decision").dataset.class = info.classes[decided];
  const point = info.operating_point;
  if (point) {  // the model's referral rule (fit --operating-point), on the probabilities as trained
    const score = point.positive.reduce((sum, i) => sum + result.trained[i], 0);
    $("refer").hidden = false;
    $("refer").dataset.refer = String(score >= point.threshold);
    $("refer").textContent = (score >= point.threshold ? "Refer: yes. " : "Refer: no. ") + point.rule;
  }
  $("unusual").hidden = !(info.ood && result.ood > info.ood.threshold);
  if (info.ood) {
    $("unusual").dataset.unusual = String(result.ood > info.ood.threshold);
    $("unusual").dataset.score = result.ood.toFixed(4);
    $("unusual").textContent = "Warning: this image is unlike the model's training images; do not trust its " +
      "classes. (" + info.ood.rule + ")";
  }
  if (!info.calibrated) $("hint").textContent = "Probabilities are as the head was trained (this model records no " +
    "calibration); the decision is the class the model's balanced-accuracy rule picks.";
  $("top").innerHTML = order.slice(0, 3).map(row).join("");
  $("predictions").innerHTML = order.map(row).join("");
  $("result").hidden = false;
  $("status").textContent = `predicted in ${result.ms.toFixed(0)} ms`;
}

async function run(model, blob) {
  document.body.dataset.state = "working";
  try {
    const result = await predict(model, blob);
    show(model, result);
    document.body.dataset.state = "done";
    return result;
  } catch (error) {
    $("status").textContent = `This image cannot be used: it ${error.message || error} (expected a JPEG or PNG photo).`;
    document.body.dataset.state = "error";
    throw error;
  }
}

async function main() {
  const model = await loadModel();
  $("model").textContent = `${model.info.name}: ${model.info.head} head on ${model.info.backbone} ` +
    `(${model.info.input_size.join("x")}, ${model.info.resize})`;
  const file = $("file"), drop = $("drop");
  file.addEventListener("change", () => file.files[0] && run(model, file.files[0]).catch(() => {}));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) run(model, e.dataTransfer.files[0]).catch(() => {});
  });
  document.body.dataset.state = "ready";
  $("status").textContent = "Ready: choose or drop an image.";
  const url = new URLSearchParams(location.search).get("image");
  if (url) {
    await run(model, await fetched(url)).catch(() => {});  // run() shows why
  }
  return model;
}

const ready = main().catch((error) => {
  $("status").textContent = `Error: ${error.message || error}`;
  document.body.dataset.state = "error";
  throw error;
});

// For automation: await skinfeat.ready; skinfeat.predictUrl(url) -> {trained, adjusted, calibrated, ood, ms, decoder, phases};
// skinfeat.inspect(url) -> the decoder used, the decoded and resized pixels and the features as well.
async function fetched(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch ${url} (HTTP ${response.status})`);
  return response.blob();
}

window.skinfeat = {
  ready,
  async predictUrl(url) {
    const {trained, adjusted, calibrated, ood, ms, decoder, phases} = await predict(await ready, await fetched(url));
    return {trained, adjusted, calibrated, ood, ms, decoder, phases};
  },
  async inspect(url) {
    const model = await ready, decoded = await decode(await fetched(url));
    const [height, width] = model.info.input_size;
    const resized = RESIZERS[model.info.resize](decoded, height, width), feats = await features(model, resized);
    return {decoder: decoded.decoder, decoded: Array.from(decoded.data), resized: Array.from(resized.data), features: Array.from(feats),
            ...headProba(model, feats)};
  },
};
