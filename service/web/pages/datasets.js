// The datasets list: name, format, rows, columns or array shapes, size.

import { el, fmtTime } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: {
    "datasets.title": "Datasets",
    "datasets.empty": "No datasets yet. Upload one with POST /datasets (see /docs).",
    "datasets.name": "Name",
    "datasets.format": "Format",
    "datasets.rows": "Rows",
    "datasets.shape": "Columns / shape",
    "datasets.size": "Size",
    "datasets.columnsN": "{n} columns",
    "datasets.train": "Train a model",
  },
  ja: {
    "datasets.title": "データセット",
    "datasets.empty": "データセットはまだありません。POST /datasets でアップロードしてください (/docs を参照)。",
    "datasets.name": "名前",
    "datasets.format": "形式",
    "datasets.rows": "行数",
    "datasets.shape": "列 / 形状",
    "datasets.size": "サイズ",
    "datasets.columnsN": "{n} 列",
    "datasets.train": "モデルを訓練する",
  },
});

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function shapeText(dataset) {
  if (dataset.columns) return t("datasets.columnsN", { n: dataset.columns.length });
  const shape = dataset.shape || {};
  const x = Array.isArray(shape.x) ? shape.x : null;
  return x ? `x ${JSON.stringify(x)}` : JSON.stringify(shape).slice(0, 60);
}

export async function render(root, _params, { api, signal }) {
  const page = await api.get("/datasets?limit=200", { signal });
  root.append(el("h1", {}, t("datasets.title")));
  if (!page.items.length) {
    root.append(el("p", { class: "muted" }, t("datasets.empty")));
    return;
  }
  const heads = [t("datasets.name"), "ID", t("datasets.format"), t("datasets.rows"), t("datasets.shape"), t("datasets.size"), t("term.created"), ""];
  root.append(el("table", { "data-testid": "datasets-table" },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))),
    el("tbody", {}, page.items.map((d) => el("tr", { "data-testid": "dataset-row", "data-dataset-id": d.id },
      el("td", {}, el("a", { href: `#/datasets/${d.id}` }, d.name)),
      el("td", { class: "mono" }, d.id),
      el("td", {}, d.format),
      el("td", { class: "num" }, String(d.num_rows)),
      el("td", {}, shapeText(d)),
      el("td", { class: "num" }, bytes(d.size_bytes)),
      el("td", { class: "hint" }, fmtTime(d.created_at)),
      el("td", {}, el("a", { href: `#/new?dataset=${d.id}` }, t("datasets.train"))))))));
}
