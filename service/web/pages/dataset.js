// One dataset: its columns (tables) or shapes (arrays, images), the class counts, and a few
// samples (images, or the first rows of a table).

import { el, fmt, fmtTime, table } from "../dom.js";
import { register, t } from "../i18n.js";
import { baseLayout, CONFIG, plotly } from "../widgets/plot.js";
import { bytes } from "./datasets.js";

register({
  en: {
    "dataset.title": "Dataset {name}",
    "dataset.columns": "Columns",
    "dataset.column": "Column",
    "dataset.dtype": "Type",
    "dataset.missing": "Missing",
    "dataset.unique": "Distinct values",
    "dataset.shape": "Shape",
    "dataset.classes": "Class counts",
    "dataset.class": "Class",
    "dataset.count": "Count",
    "dataset.samples": "Samples",
    "dataset.noSamples": "No samples to show.",
    "dataset.train": "Train a model on this dataset",
    "dataset.rows": "Rows",
    "dataset.format": "Format",
    "dataset.size": "Size",
  },
  ja: {
    "dataset.title": "データセット {name}",
    "dataset.columns": "列",
    "dataset.column": "列名",
    "dataset.dtype": "型",
    "dataset.missing": "欠損",
    "dataset.unique": "異なる値の数",
    "dataset.shape": "形状",
    "dataset.classes": "クラスごとの件数",
    "dataset.class": "クラス",
    "dataset.count": "件数",
    "dataset.samples": "サンプル",
    "dataset.noSamples": "表示できるサンプルはありません。",
    "dataset.train": "このデータセットでモデルを訓練する",
    "dataset.rows": "行数",
    "dataset.format": "形式",
    "dataset.size": "サイズ",
  },
});

export async function render(root, { id }, { api, signal }) {
  const path = `/datasets/${encodeURIComponent(id)}`;
  const dataset = await api.get(path, { signal });
  root.append(
    el("h1", {}, t("dataset.title", { name: dataset.name })),
    el("dl", { class: "kv" },
      el("dt", {}, "ID"), el("dd", { class: "mono" }, dataset.id),
      el("dt", {}, t("dataset.format")), el("dd", {}, `${dataset.format} (${dataset.filename})`),
      el("dt", {}, t("dataset.rows")), el("dd", {}, String(dataset.num_rows)),
      el("dt", {}, t("dataset.size")), el("dd", {}, bytes(dataset.size_bytes)),
      el("dt", {}, t("term.created")), el("dd", {}, fmtTime(dataset.created_at))),
    el("p", {}, el("a", { class: "button primary", href: `#/new?dataset=${dataset.id}` }, t("dataset.train"))),
  );
  if (dataset.columns) {
    root.append(el("h2", {}, t("dataset.columns")), table(
      [t("dataset.column"), t("dataset.dtype"), t("dataset.missing"), t("dataset.unique")],
      // Past 100,000 distinct values the count is an estimate: shown as one.
      dataset.columns.map((c) => [el("span", { class: "mono" }, c.name), c.dtype, String(c.missing),
        c.unique_exact === false ? `≈ ${c.unique}` : String(c.unique)]),
      { "data-testid": "dataset-columns" }));
  } else if (dataset.shape) {
    const shape = Object.entries(dataset.shape).filter(([k]) => k !== "class_counts");
    root.append(el("h2", {}, t("dataset.shape")), table([t("dataset.column"), t("dataset.shape")],
      shape.map(([k, v]) => [el("span", { class: "mono" }, k), el("span", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : fmt(v))]),
      { "data-testid": "dataset-columns" }));
  }
  const counts = dataset.shape?.class_counts;
  let drawCounts = null;
  if (counts && Object.keys(counts).length) {
    const chart = el("div", { class: "plot", "data-testid": "dataset-classes" });
    root.append(el("h2", {}, t("dataset.classes")), el("div", { class: "card" }, chart));
    drawCounts = async () => {
      const Plotly = await plotly();
      const layout = baseLayout({ xTitle: t("dataset.class"), yTitle: t("dataset.count"), extra: { hovermode: "closest" } });
      layout.xaxis.type = "category";
      await Plotly.react(chart, [{ type: "bar", x: Object.keys(counts), y: Object.values(counts), marker: { color: "#2f6fdf" } }], layout, CONFIG);
    };
  }
  const samples = el("section", {}, el("h2", {}, t("dataset.samples")));
  root.append(samples);
  await drawCounts?.();
  const found = await api.get(`${path}/samples?n=12`, { signal }).catch(() => null);
  if (found?.kind === "images" && found.items?.length) {
    samples.append(el("div", { class: "gallery", "data-testid": "dataset-samples" }, found.items.map((s) =>
      el("figure", { "data-label": String(s.label) }, el("img", { src: s.image, alt: String(s.label) }), el("figcaption", {}, String(s.label))))));
  } else if (found?.kind === "table" && found.rows?.length) {
    samples.append(el("div", { style: "overflow:auto" }, table(found.columns, found.rows.map((r) => r.map((v) => (v === null ? "–" : String(v)))), { "data-testid": "dataset-samples" })));
  } else {
    samples.append(el("p", { class: "muted" }, t("dataset.noSamples")));
  }
}
