// The models list: kind, task, source job and the main final metric of each trained model.

import { el, fmt, fmtTime } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: {
    "models.title": "Models",
    "models.empty": "No models yet: a job that succeeds registers one.",
    "models.metric": "Main metric",
    "models.try": "Try it",
    "models.shown": "{total} models",
  },
  ja: {
    "models.title": "モデル",
    "models.empty": "モデルはまだありません。ジョブが成功するとモデルが登録されます。",
    "models.metric": "主な評価指標",
    "models.try": "試す",
    "models.shown": "モデル {total} 件",
  },
});

// The metric a person looks at first: accuracy (classification), R² (regression), RMSE
// (forecasting) or the evaluation return (reinforcement learning), from the test part if any.
export function mainMetric(model) {
  const m = model.metrics || {};
  if (model.task === "reinforcement") {
    const value = m.evaluation?.return_mean;
    return value === undefined ? null : { key: "term.eval_return", value };
  }
  const names = { classification: "accuracy", regression: "r2", forecasting: "rmse" };
  const name = names[model.task];
  for (const split of ["test", "validation", "train"]) {
    const value = m[split]?.[name];
    if (typeof value === "number") return { key: `models.main.${model.task}`, value, split };
  }
  return null;
}

register({
  en: { "models.main.classification": "Accuracy", "models.main.regression": "R²", "models.main.forecasting": "RMSE" },
  ja: { "models.main.classification": "正解率", "models.main.regression": "決定係数 R²", "models.main.forecasting": "RMSE" },
});

export async function render(root, _params, ctx) {
  const { api, signal } = ctx;
  const page = await api.get("/models?limit=500", { signal });
  root.append(el("h1", {}, t("models.title")));
  if (!page.items.length) {
    root.append(el("p", { class: "muted", "data-testid": "models-empty" }, t("models.empty")));
    return;
  }
  const rows = page.items.map((model) => {
    const metric = mainMetric(model);
    const href = `#/models/${encodeURIComponent(model.id)}`;
    return el(
      "tr",
      { "data-testid": "model-row", "data-model-id": model.id },
      el("td", {}, el("a", { href, class: "mono" }, model.id.slice(0, 12))),
      el("td", {}, model.kind),
      el("td", {}, model.task),
      el("td", {}, model.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(model.job_id)}`, class: "mono" }, model.job_id.slice(0, 12)) : "–"),
      el("td", { class: "num" }, metric ? `${t(metric.key)} ${fmt(metric.value)}` : "–"),
      el("td", {}, fmtTime(model.created_at)),
      el("td", {}, el("a", { href, class: "button" }, t("models.try"))),
    );
  });
  root.append(
    el("p", { class: "hint" }, t("models.shown", { total: page.total })),
    el(
      "table",
      { "data-testid": "models-table" },
      el("thead", {}, el("tr", {}, [t("term.model"), t("term.kind"), t("term.task"), t("term.job"), t("models.metric"), t("term.created"), ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    ),
  );
}
