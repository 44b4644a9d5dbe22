// A finished job's results: final metrics as tables, the confusion matrix as a heatmap
// with per-class accuracy, checkpoints, and the gallery of test images the model got wrong.

import { el, fmt, fmtTime, table } from "../dom.js";
import { metricLabel, register, t } from "../i18n.js";
import { baseLayout, CONFIG, plotly } from "./plot.js";

register({
  en: {
    "results.metrics": "Final metrics",
    "results.metric": "Metric",
    "results.value": "Value",
    "results.perClass": "Per-class accuracy",
    "results.class": "Class",
    "results.true": "True label",
    "results.predicted": "Predicted label",
    "results.confusionOf": "Confusion matrix ({split})",
    "results.checkpoints": "Checkpoints",
    "results.noCheckpoints": "No checkpoints yet.",
    "results.sha": "SHA-256",
    "results.mistakes": "Test images the model gets wrong",
    "results.mistakeCaption": "true {label} → predicted {predicted} ({confidence})",
  },
  ja: {
    "results.metrics": "最終的な評価指標",
    "results.metric": "指標",
    "results.value": "値",
    "results.perClass": "クラスごとの正解率",
    "results.class": "クラス",
    "results.true": "正解ラベル",
    "results.predicted": "予測ラベル",
    "results.confusionOf": "混同行列 ({split})",
    "results.checkpoints": "チェックポイント",
    "results.noCheckpoints": "チェックポイントはまだありません。",
    "results.sha": "SHA-256",
    "results.mistakes": "モデルが間違えたテスト画像",
    "results.mistakeCaption": "正解 {label} → 予測 {predicted} ({confidence})",
  },
});

export const SPLITS = ["test", "validation", "train"];
const splitName = (split) => t(split === "validation" ? "term.validation" : split === "train" ? "term.train" : "term.test");
const scalar = (v) => v === null || typeof v === "number" || typeof v === "string" || typeof v === "boolean";

export function metricsTables(metrics) {
  const tables = [];
  for (const split of SPLITS) {
    const values = metrics?.[split];
    if (!values || typeof values !== "object") continue;
    const rows = Object.entries(values).filter(([, v]) => scalar(v)).map(([k, v]) => [el("span", { title: k }, metricLabel(k)), el("span", { class: "mono" }, fmt(v))]);
    if (rows.length) tables.push(el("div", {}, el("h3", {}, splitName(split)), table([t("results.metric"), t("results.value")], rows, { "data-split": split })));
  }
  if (!tables.length) return null;
  return el("section", { "data-testid": "job-metrics" }, el("h2", {}, t("results.metrics")), el("div", { class: "grid" }, tables));
}

// The split whose confusion matrix is shown: test, else validation, else train.
export function confusionSplit(metrics) {
  return SPLITS.find((s) => Array.isArray(metrics?.[s]?.confusion_matrix)) ?? null;
}

export async function confusion(metrics, labels) {
  const split = confusionSplit(metrics);
  if (!split) return null;
  const matrix = metrics[split].confusion_matrix;
  const names = (labels && labels.length === matrix.length ? labels : matrix.map((_, i) => i)).map(String);
  const div = el("div", { class: "plot", "data-testid": "confusion-matrix", "data-split": split, "data-matrix": JSON.stringify(matrix) });
  const size = Math.min(Math.max(320, 40 * names.length + 140), 720);
  div.style.height = `${size}px`;
  div.style.maxWidth = `${size + 120}px`;
  const perClass = metrics[split].per_class_accuracy;
  const section = el(
    "section",
    {},
    el("h2", {}, t("results.confusionOf", { split: splitName(split) })),
    el("div", { class: "grid" }, el("div", { class: "card" }, div, el("script", { type: "application/json", "data-testid": "confusion-data" }, JSON.stringify({ split, matrix, labels: names }))),
      Array.isArray(perClass)
        ? el("div", { class: "card" }, el("h3", {}, t("results.perClass")), table([t("results.class"), t("term.accuracy")], perClass.map((acc, i) => [names[i] ?? i, el("span", { class: "mono" }, fmt(acc))]), { "data-testid": "per-class-accuracy" }))
        : null),
  );
  const Plotly = await plotly();
  const layout = baseLayout({ xTitle: t("results.predicted"), yTitle: t("results.true") });
  Object.assign(layout, { hovermode: "closest", margin: { l: 90, r: 16, t: 12, b: 70 } });
  layout.xaxis = { ...layout.xaxis, type: "category", side: "bottom" };
  layout.yaxis = { ...layout.yaxis, type: "category", autorange: "reversed" };
  // Rendered once the section is in the page (Plotly measures its div).
  section.draw = () =>
    Plotly.react(div, [{ type: "heatmap", z: matrix, x: names, y: names, colorscale: [[0, "#f4f7fd"], [1, "#1f4fb0"]], texttemplate: "%{z}", hovertemplate: `${t("results.true")}: %{y}<br>${t("results.predicted")}: %{x}<br>%{z}<extra></extra>` }], layout, CONFIG);
  return section;
}

export function checkpointsTable(checkpoints) {
  const rows = (checkpoints || []).map((c) => [String(c.epoch), el("span", { class: "mono", title: c.sha256 }, `${c.sha256.slice(0, 12)}…`), fmtTime(c.created_at)]);
  return el(
    "section",
    { "data-testid": "job-checkpoints" },
    el("h2", {}, t("results.checkpoints")),
    rows.length ? table([t("term.epoch"), t("results.sha"), t("term.created")], rows) : el("p", { class: "muted" }, t("results.noCheckpoints")),
  );
}

export function mistakesGallery(answer) {
  const items = answer?.items || [];
  if (!items.length) return null;
  return el(
    "section",
    {},
    el("h2", {}, t("results.mistakes")),
    el("div", { class: "gallery", "data-testid": "mistakes" }, items.map((m) =>
      el("figure", { "data-testid": "mistake", "data-label": String(m.label), "data-predicted": String(m.predicted) },
        el("img", { src: m.image, alt: `${m.label} → ${m.predicted}` }),
        el("figcaption", {}, t("results.mistakeCaption", { label: m.label, predicted: m.predicted, confidence: fmt(m.confidence, 2) }))))),
  );
}
