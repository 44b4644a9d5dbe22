// Tiny DOM helpers shared by every page: el() builds elements, fmt() formats numbers,
// errorText() turns an API error into a sentence.

import { ApiError } from "./api.js";
import { t } from "./i18n.js";

// el("a", {href, class, "data-testid": ..., onclick}, child, [children], "text")
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "value" || name === "checked" || name === "selected" || name === "disabled") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toPrecision(digits).replace(/\.?0+$/, "");
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(detail);
}

export function errorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 404) return t("common.notFound", { what: describe(err.detail) });
    return t("common.error", { message: describe(err.detail) });
  }
  if (err instanceof TypeError) return t("common.offline", { message: err.message });
  return t("common.error", { message: err?.message || String(err) });
}

export function errorBox(err) {
  return el("p", { class: "error", role: "alert", "data-testid": "page-error" }, errorText(err));
}

// A <table> from a header row and body rows (cells: strings, numbers or nodes).
export function table(headers, rows, attrs = {}) {
  return el(
    "table",
    attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((row) => (row instanceof Node ? row : el("tr", {}, row.map((c) => el("td", {}, c)))))),
  );
}
