// One study: its trials' values over time with the best so far, a parallel-coordinates plot
// of the parameters against the metric, the parameters' importances and the trials table.
// Read again every two seconds while the study runs.

import { el, errorBox, fmt, table } from "../dom.js";
import { register, t } from "../i18n.js";
import { baseLayout, COLORS, CONFIG, plotly } from "../widgets/plot.js";
import { statusChip } from "../widgets/status.js";
import { direction } from "./studies.js";

register({
  en: {
    "study.title": "Study {id}",
    "study.cancel": "Cancel study",
    "study.overTime": "Trials over time",
    "study.trial": "Trial",
    "study.value": "Value",
    "study.bestSoFar": "Best so far",
    "study.params": "Parameters against the metric",
    "study.importances": "Parameter importances",
    "study.importance": "Importance",
    "study.importancesHint": "How much of the metric's spread each parameter explains (fANOVA), once four trials have a value.",
    "study.trials": "Trials",
    "study.best": "Best trial: #{number}, {metric} {value}",
    "study.noValues": "No trial has a value yet.",
    "study.spec": "Study spec",
    "study.error": "Error",
  },
  ja: {
    "study.title": "探索 {id}",
    "study.cancel": "探索をキャンセル",
    "study.overTime": "試行ごとの値",
    "study.trial": "試行",
    "study.value": "値",
    "study.bestSoFar": "それまでの最良値",
    "study.params": "パラメータと評価指標 (平行座標)",
    "study.importances": "パラメータの重要度",
    "study.importance": "重要度",
    "study.importancesHint": "評価指標のばらつきを各パラメータがどれだけ説明するか (fANOVA)。値のある試行が 4 つ以上で表示されます。",
    "study.trials": "試行一覧",
    "study.best": "最良の試行: #{number}、{metric} {value}",
    "study.noValues": "値のある試行はまだありません。",
    "study.spec": "探索の設定 (spec)",
    "study.error": "エラー",
  },
});

const POLL_MS = 2000;

// The best value after each trial with a value: [numbers, values].
export function bestSoFar(trials, maximize) {
  const xs = [];
  const ys = [];
  let best = null;
  for (const trial of trials) {
    if (trial.value === null) continue;
    if (best === null || (maximize ? trial.value > best : trial.value < best)) best = trial.value;
    xs.push(trial.number);
    ys.push(best);
  }
  return [xs, ys];
}

// One parallel-coordinates axis per parameter: numbers as they are (log ranges as log10),
// anything else (names, lists of widths) as the index of its choice, labelled with it.
export function dimension(path, param, trials) {
  const values = trials.map((trial) => trial.params[path]);
  if (param.type === "categorical") {
    const labels = param.choices.map((c) => (typeof c === "string" ? c : JSON.stringify(c)));
    const index = values.map((v) => labels.indexOf(typeof v === "string" ? v : JSON.stringify(v)));
    return { label: path, values: index, tickvals: labels.map((_, i) => i), ticktext: labels, range: [0, Math.max(labels.length - 1, 1)] };
  }
  if (param.log) return { label: `log10 ${path}`, values: values.map((v) => Math.log10(v)), range: [Math.log10(param.low), Math.log10(param.high)] };
  return { label: path, values, range: [param.low, param.high] };
}

// Trials are whole numbers: a tick per trial, or per so many when there are many.
function trialsLayout(study) {
  const layout = baseLayout({ xTitle: t("study.trial"), yTitle: study.metric, extra: { hovermode: "closest" } });
  layout.xaxis = { ...layout.xaxis, dtick: Math.max(1, Math.ceil(study.n_trials / 20)), tick0: 0 };
  return layout;
}

const shown = (value) => (typeof value === "number" ? fmt(value) : JSON.stringify(value));

// Keiko's look without the cartesian axes a parallel-coordinates plot has no use for.
function coordsLayout() {
  const { xaxis, yaxis, hovermode, ...layout } = baseLayout({ extra: { margin: { l: 80, r: 80, t: 48, b: 24 } } });
  return layout;
}

export async function render(root, { id }, ctx) {
  const { api, signal } = ctx;
  const path = `/studies/${encodeURIComponent(id)}`;
  let study = await api.get(path, { signal });
  const maximize = study.direction === "maximize";

  const status = el("span", { "data-testid": "study-status" });
  const cancel = el("button", { class: "danger", "data-testid": "study-cancel", onclick: () => cancelStudy() }, t("study.cancel"));
  const best = el("p", { "data-testid": "study-best" });
  const overTime = el("div", { class: "plot", "data-testid": "study-over-time" });
  const coords = el("div", { class: "plot", "data-testid": "study-parcoords" });
  const importances = el("div", { "data-testid": "study-importances" });
  const trialsBox = el("div");
  const errorLine = el("p", { class: "error", "data-testid": "study-error" });
  root.append(
    el("h1", {}, t("study.title", { id })),
    el("div", { class: "row" }, status, cancel, el("span", { class: "muted" }, `${study.metric} ${direction(study)}`), el("span", { class: "muted", "data-testid": "study-count" })),
    errorLine,
    best,
    el("h2", {}, t("study.overTime")),
    overTime,
    el("h2", {}, t("study.params")),
    coords,
    el("h2", {}, t("study.importances")),
    el("p", { class: "hint" }, t("study.importancesHint")),
    importances,
    el("h2", {}, t("study.trials")),
    trialsBox,
    el("h2", {}, t("study.spec")),
    el("pre", { "data-testid": "study-spec" }, JSON.stringify(study.spec, null, 2)),
  );

  async function draw() {
    status.replaceChildren(statusChip(study.status));
    status.dataset.status = study.status;
    cancel.hidden = study.finished_at !== null || study.status !== "running";
    root.querySelector("[data-testid=study-count]").textContent = `${study.trials.length}/${study.n_trials} ${t("study.trials")}`;
    errorLine.textContent = study.error ? `${t("study.error")}: ${study.error}` : "";
    errorLine.hidden = !study.error;
    best.replaceChildren(
      study.best
        ? el("span", {}, t("study.best", { number: study.best.number, metric: study.metric, value: fmt(study.best.value) }), " · ",
            el("a", { href: `#/jobs/${encodeURIComponent(study.best.job_id)}` }, t("term.job")),
            study.best.model_id ? [" · ", el("a", { href: `#/models/${encodeURIComponent(study.best.model_id)}`, "data-testid": "study-best-model" }, t("term.model"))] : null)
        : t("study.noValues"),
    );
    const scored = study.trials.filter((trial) => trial.value !== null);
    const [bestX, bestY] = bestSoFar(study.trials, maximize);
    const Plotly = await plotly();
    await Plotly.react(
      overTime,
      [
        { type: "scatter", mode: "markers", name: study.metric, meta: "value", x: scored.map((tr) => tr.number), y: scored.map((tr) => tr.value), marker: { color: COLORS[0], size: 8 } },
        { type: "scatter", mode: "lines", name: t("study.bestSoFar"), meta: "best", x: bestX, y: bestY, line: { shape: "hv", color: COLORS[1] } },
      ],
      trialsLayout(study),
      CONFIG,
    );
    const space = study.spec.space;
    const dims = Object.keys(space).map((p) => dimension(p, space[p], scored));
    dims.push({ label: study.metric, values: scored.map((tr) => tr.value) });
    await Plotly.react(
      coords,
      [{ type: "parcoords", dimensions: dims, line: { color: scored.map((tr) => tr.value), colorscale: "Viridis", reversescale: !maximize, showscale: true } }],
      coordsLayout(),
      CONFIG,
    );
    importances.replaceChildren(
      study.importances
        ? table([t("term.parameter"), t("study.importance")], Object.entries(study.importances).map(([p, v]) => [p, fmt(v, 3)]))
        : el("p", { class: "muted" }, "–"),
    );
    trialsBox.replaceChildren(
      table(
        ["#", t("term.status"), ...Object.keys(space), t("study.value"), t("term.job"), t("term.model")],
        study.trials.map((trial) => [
          String(trial.number),
          statusChip(trial.status),
          ...Object.keys(space).map((p) => shown(trial.params[p])),
          trial.value === null ? (trial.error || "–") : fmt(trial.value),
          trial.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(trial.job_id)}`, class: "mono" }, trial.job_id.slice(0, 12)) : "–",
          trial.model_id ? el("a", { href: `#/models/${encodeURIComponent(trial.model_id)}`, class: "mono" }, trial.model_id.slice(0, 12)) : "–",
        ]),
        { "data-testid": "study-trials" },
      ),
    );
  }

  async function cancelStudy() {
    cancel.disabled = true;
    try {
      study = await api.post(`${path}/cancel`, {}, { signal });
      await draw();
    } catch (err) {
      cancel.after(errorBox(err));
    }
  }

  await draw();
  let timer = null;
  ctx.onCleanup(() => clearTimeout(timer));
  const poll = async () => {
    if (study.finished_at !== null || signal.aborted) return;
    try {
      study = await api.get(path, { signal });
      await draw();
    } catch (err) {
      if (!signal.aborted) console.warn("study not refreshed", err);
    }
    timer = setTimeout(poll, POLL_MS);
  };
  timer = setTimeout(poll, POLL_MS);
}
