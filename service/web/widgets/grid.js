// The grid world as SVG, with the path of a rollout, and a bar chart of rollout returns for
// other environments.

import { el, fmt } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: {
    "grid.start": "start",
    "grid.goal": "goal",
    "grid.penalty": "penalty",
    "grid.wall": "wall",
    "grid.path": "The greedy policy's path: {steps} steps, return {ret}.",
    "grid.title": "Grid world",
    "returns.title": "Return of each episode",
    "returns.episode": "Episode",
  },
  ja: {
    "grid.start": "スタート",
    "grid.goal": "ゴール",
    "grid.penalty": "罰",
    "grid.wall": "壁",
    "grid.path": "貪欲方策の経路: {steps} ステップ、報酬 {ret}。",
    "grid.title": "グリッドワールド",
    "returns.title": "エピソードごとの報酬",
    "returns.episode": "エピソード",
  },
});

const SVG = "http://www.w3.org/2000/svg";
const FILL = { S: "#e3edff", G: "#e3f5ea", X: "#fdecea", "#": "#4b5563", ".": "#ffffff" };
const NAME = { S: "grid.start", G: "grid.goal", X: "grid.penalty", "#": "grid.wall" };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

// The cells of a GridWorld spec's env_options (models/specs/rl.py GridWorldOptions).
export function gridLayout(options) {
  if (options?.layout) return options.layout;
  if (options?.rows && options?.cols) {
    const rows = Array.from({ length: options.rows }, () => ".".repeat(options.cols).split(""));
    rows[0][0] = "S";
    rows[options.rows - 1][options.cols - 1] = "G";
    return rows.map((r) => r.join(""));
  }
  return ["SX.", "..G"];
}

// layout: rows of S G X # . cells; path: [[row, col], ...] from POST /models/{id}/rollout.
export function gridWorld(layout, path) {
  const rows = layout.length;
  const cols = layout[0].length;
  const cell = Math.max(16, Math.min(96, Math.floor(576 / Math.max(rows, cols))));
  const width = cols * cell;
  const height = rows * cell;
  const cells = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const kind = layout[r][c];
      cells.push(svg("rect", { x: c * cell, y: r * cell, width: cell, height: cell, fill: FILL[kind] ?? "#fff", stroke: "#cfd5dd" }));
      if (NAME[kind] && kind !== "#") {
        const label = svg("text", { x: c * cell + 4, y: r * cell + 14, "font-size": Math.max(8, Math.min(12, cell / 6)), fill: "#667085" });
        label.textContent = t(NAME[kind]);
        cells.push(label);
      }
    }
  }
  const centre = ([r, c]) => [c * cell + cell / 2, r * cell + cell / 2];
  const points = path.map(centre);
  const marker = svg(
    "marker",
    { id: "grid-arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 3.5, markerHeight: 3.5, orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#e4572e" }),
  );
  const line = points.length > 1
    ? svg("polyline", { points: points.map((p) => p.join(",")).join(" "), fill: "none", stroke: "#e4572e", "stroke-width": Math.max(2, cell / 16), "stroke-linejoin": "round", "marker-end": "url(#grid-arrow)", "data-testid": "grid-path" })
    : null;
  const dots = points.map(([x, y], i) => svg("circle", { cx: x, cy: y, r: (i === 0 ? 0.12 : 0.06) * cell, fill: "#e4572e" }));
  return svg(
    "svg",
    { viewBox: `-2 -2 ${width + 4} ${height + 4}`, width: width + 4, height: height + 4, role: "img", "aria-label": t("grid.title"), "data-testid": "grid-world", "data-path": JSON.stringify(path), class: "grid-world" },
    svg("defs", {}, marker),
    ...cells,
    line,
    ...dots,
  );
}

// Bars of the returns of a rollout's episodes (SVG; no plotting library needed).
export function returnsChart(returns) {
  const width = 520;
  const height = 200;
  const pad = 28;
  const low = Math.min(0, ...returns);
  const high = Math.max(0, ...returns);
  const span = high - low || 1;
  const y = (v) => pad / 2 + ((high - v) / span) * (height - pad);
  const bar = (width - pad) / Math.max(1, returns.length);
  const bars = returns.map((v, i) => {
    const rect = svg("rect", { x: pad + i * bar + 1, y: Math.min(y(v), y(0)), width: Math.max(1, bar - 2), height: Math.max(1, Math.abs(y(v) - y(0))), fill: "#2f6fdf" });
    const title = svg("title");
    title.textContent = `${t("returns.episode")} ${i + 1}: ${fmt(v)}`;
    rect.append(title);
    return rect;
  });
  const axis = svg("line", { x1: pad, x2: width, y1: y(0), y2: y(0), stroke: "#667085" });
  const labels = [high, low].map((v) => {
    const text = svg("text", { x: 2, y: y(v) + 4, "font-size": 10, fill: "#667085" });
    text.textContent = fmt(v, 3);
    return text;
  });
  return el(
    "figure",
    { class: "returns", "data-testid": "rollout-returns", "data-returns": JSON.stringify(returns) },
    svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": t("returns.title") }, axis, ...bars, ...labels),
    el("figcaption", { class: "hint" }, t("returns.title")),
  );
}
