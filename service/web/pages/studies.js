// The studies list: status, metric, trials by status and the best value of each study.

import { el, fmt, fmtTime } from "../dom.js";
import { register, t } from "../i18n.js";
import { statusChip } from "../widgets/status.js";

register({
  en: {
    "studies.title": "Studies",
    "studies.empty": "No studies yet. Start one with POST /studies (see /docs): a base job spec, a search space over its fields, a metric.",
    "studies.metric": "Metric",
    "studies.trials": "Trials",
    "studies.best": "Best",
    "studies.shown": "{total} studies",
  },
  ja: {
    "studies.title": "ハイパーパラメータ探索",
    "studies.empty": "探索はまだありません。POST /studies で始めてください (/docs を参照)。基本のジョブ設定、その項目の探索空間、評価指標を指定します。",
    "studies.metric": "評価指標",
    "studies.trials": "試行",
    "studies.best": "最良値",
    "studies.shown": "探索 {total} 件",
  },
});

export function direction(study) {
  return study.direction === "maximize" ? "↑" : "↓";
}

export async function render(root, _params, ctx) {
  const { api, signal } = ctx;
  const page = await api.get("/studies?limit=500", { signal });
  root.append(el("h1", {}, t("studies.title")));
  if (!page.items.length) {
    root.append(el("p", { class: "muted", "data-testid": "studies-empty" }, t("studies.empty")));
    return;
  }
  const rows = page.items.map((study) => {
    const href = `#/studies/${encodeURIComponent(study.id)}`;
    const done = Object.values(study.counts).reduce((a, b) => a + b, 0);
    const counts = Object.entries(study.counts).map(([status, n]) => `${t(`status.${status}`)} ${n}`).join(" · ");
    return el(
      "tr",
      { "data-testid": "study-row", "data-study-id": study.id },
      el("td", {}, el("a", { href, class: "mono" }, study.id.slice(0, 12))),
      el("td", {}, statusChip(study.status)),
      el("td", {}, `${study.metric} ${direction(study)}`),
      el("td", { title: counts }, `${done}/${study.n_trials}`),
      el("td", { class: "num", "data-testid": "study-best" }, study.best_value === null ? "–" : fmt(study.best_value)),
      el("td", {}, fmtTime(study.created_at)),
    );
  });
  root.append(
    el("p", { class: "hint" }, t("studies.shown", { total: page.total })),
    el(
      "table",
      { "data-testid": "studies-table" },
      el("thead", {}, el("tr", {}, ["ID", t("term.status"), t("studies.metric"), t("studies.trials"), t("studies.best"), t("term.created")].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    ),
  );
}
