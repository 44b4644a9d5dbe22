// Draw a digit, preprocessed as MNIST's digits were made: the ink cropped to its bounding
// box, scaled to fit 20x20 keeping its aspect ratio (exact area averaging), and placed in
// 28x28 so that its centre of mass lands on the centre. tests/browser/digit_reference.py is
// the same computation in Python; the browser test holds the two to 1e-6.

import { el } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: {
    "digit.title": "Draw a digit",
    "digit.help": "Draw with the mouse, a pen or a finger. It is cropped, scaled to 20×20 and centred in 28×28 by its centre of mass, as MNIST was made.",
    "digit.clear": "Clear",
    "digit.predict": "Predict",
    "digit.empty": "Draw something first.",
    "digit.input": "What the model sees (28×28)",
  },
  ja: {
    "digit.title": "数字を書く",
    "digit.help": "マウス・ペン・指で書いてください。MNIST の作り方と同じく、インクの範囲で切り出し、20×20 に縮小し、重心が中央に来るよう 28×28 に配置します。",
    "digit.clear": "消す",
    "digit.predict": "予測する",
    "digit.empty": "先に何か書いてください。",
    "digit.input": "モデルへの入力 (28×28)",
  },
});

export const SIDE = 28;
export const BOX = 20;
const CENTRE = (SIDE - 1) / 2; // 13.5: the centre of the field in pixel-index coordinates

const roundHalfUp = (x) => Math.floor(x + 0.5);

// Weights (out × size): row i averages the input interval [i·size/out, (i+1)·size/out),
// each input cell weighted by how much of it the interval covers; every row sums to 1.
export function areaWeights(size, out) {
  const weights = [];
  for (let i = 0; i < out; i++) {
    const lo = (i * size) / out;
    const hi = ((i + 1) * size) / out;
    const row = new Float64Array(size);
    for (let j = Math.floor(lo); j < Math.min(size, Math.ceil(hi)); j++) {
      const overlap = Math.min(hi, j + 1) - Math.max(lo, j);
      if (overlap > 0) row[j] = (overlap * out) / size;
    }
    weights.push(row);
  }
  return weights;
}

// rgba: the canvas's pixels (Uint8ClampedArray, width·height·4), white ink on black.
// Returns the 28x28 field of ink (rows of numbers in 0..1), or null when nothing is drawn.
export function preprocessDigit(rgba, width, height) {
  const ink = new Float64Array(width * height);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = rgba[(y * width + x) * 4] / 255; // the red channel: ink is grey
      ink[y * width + x] = v;
      if (v > 0) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return null;
  const h = bottom - top + 1;
  const w = right - left + 1;
  const scale = BOX / Math.max(h, w);
  const oh = Math.max(1, Math.min(BOX, roundHalfUp(h * scale)));
  const ow = Math.max(1, Math.min(BOX, roundHalfUp(w * scale)));
  const wy = areaWeights(h, oh); // (oh × h)
  const wx = areaWeights(w, ow); // (ow × w)
  // rows = wy · crop  (oh × w), then small = rows · wxᵀ  (oh × ow)
  const rows = [];
  for (let i = 0; i < oh; i++) {
    const row = new Float64Array(w);
    for (let y = 0; y < h; y++) {
      const weight = wy[i][y];
      if (weight === 0) continue;
      const base = (top + y) * width + left;
      for (let x = 0; x < w; x++) row[x] += weight * ink[base + x];
    }
    rows.push(row);
  }
  const small = rows.map((row) => {
    const out = new Float64Array(ow);
    for (let k = 0; k < ow; k++) {
      let sum = 0;
      for (let x = 0; x < w; x++) sum += wx[k][x] * row[x];
      out[k] = sum;
    }
    return out;
  });
  // Centre of mass (pixel-index coordinates) of the scaled digit.
  let mass = 0, my = 0, mx = 0;
  for (let i = 0; i < oh; i++) {
    for (let k = 0; k < ow; k++) {
      mass += small[i][k];
      my += i * small[i][k];
      mx += k * small[i][k];
    }
  }
  const cy = mass > 0 ? my / mass : (oh - 1) / 2;
  const cx = mass > 0 ? mx / mass : (ow - 1) / 2;
  // An integer shift puts it on the centre; clamped so that no ink leaves the field.
  const oy = Math.min(SIDE - oh, Math.max(0, roundHalfUp(CENTRE - cy)));
  const ox = Math.min(SIDE - ow, Math.max(0, roundHalfUp(CENTRE - cx)));
  const field = Array.from({ length: SIDE }, () => new Array(SIDE).fill(0));
  for (let i = 0; i < oh; i++) for (let k = 0; k < ow; k++) field[oy + i][ox + k] = small[i][k];
  return field;
}

// The 28x28 field (0..1) as one model input: values times `full` (255 for 8-bit
// datasets, 1 for float ones) in the layout of `shape`: [28,28], [28,28,1] or [1,28,28].
// Clipped to the range: sums of weights that add up to 1 can land a hair above it.
export function toInput(field, shape, full) {
  const scaled = field.map((row) => row.map((v) => Math.min(full, Math.max(0, v * full))));
  if (shape.length === 3 && shape[0] === 1) return [scaled];
  if (shape.length === 3) return scaled.map((row) => row.map((v) => [v]));
  return scaled;
}

// The drawing pad: a 280x280 canvas (pointer events: mouse, pen and touch), Clear and
// Predict. onPredict(field) gets the preprocessed 28x28 field.
export function digitPad({ onPredict, size = 280 }) {
  const canvas = el("canvas", { width: size, height: size, class: "digit-canvas", "data-testid": "digit-canvas", "aria-label": t("digit.title") });
  const preview = el("canvas", { width: SIDE, height: SIDE, class: "digit-preview", "data-testid": "digit-preview", title: t("digit.input") });
  const message = el("p", { class: "hint", "aria-live": "polite" });
  canvas.style.touchAction = "none"; // a finger draws instead of scrolling the page
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const clear = () => {
    g.fillStyle = "#000";
    g.fillRect(0, 0, size, size);
    preview.getContext("2d").clearRect(0, 0, SIDE, SIDE);
    message.textContent = "";
  };
  clear();
  g.strokeStyle = "#fff";
  g.lineWidth = Math.round(size / 14);
  g.lineCap = "round";
  g.lineJoin = "round";
  let drawing = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * size) / box.width, ((event.clientY - box.top) * size) / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    try {
      canvas.setPointerCapture(event.pointerId); // strokes that leave the canvas still end
    } catch {
      // a pointer the browser no longer tracks: draw without capture
    }
    drawing = event.pointerId;
    const [x, y] = at(event);
    g.beginPath();
    g.moveTo(x, y);
    g.lineTo(x, y);
    g.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (drawing !== event.pointerId) return;
    const [x, y] = at(event);
    g.lineTo(x, y);
    g.stroke();
  });
  const stop = (event) => {
    if (drawing === event.pointerId) drawing = null;
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  const predict = () => {
    const field = preprocessDigit(g.getImageData(0, 0, size, size).data, size, size);
    if (!field) {
      message.textContent = t("digit.empty");
      return;
    }
    message.textContent = "";
    drawPreview(preview, field);
    onPredict(field);
  };
  const node = el(
    "div",
    { class: "digit-pad" },
    el("p", { class: "hint" }, t("digit.help")),
    el("div", { class: "row digit-row" }, canvas, el("figure", { class: "digit-figure" }, preview, el("figcaption", { class: "hint" }, t("digit.input")))),
    el(
      "div",
      { class: "row" },
      el("button", { type: "button", "data-testid": "digit-clear", onclick: clear }, t("digit.clear")),
      el("button", { type: "button", class: "primary", "data-testid": "digit-predict", onclick: predict }, t("digit.predict")),
    ),
    message,
  );
  return { node, canvas, predict, clear };
}

function drawPreview(canvas, field) {
  const g = canvas.getContext("2d");
  const image = g.createImageData(SIDE, SIDE);
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const v = Math.round(field[y][x] * 255);
      const p = (y * SIDE + x) * 4;
      image.data[p] = image.data[p + 1] = image.data[p + 2] = v;
      image.data[p + 3] = 255;
    }
  }
  g.putImageData(image, 0, 0);
}
