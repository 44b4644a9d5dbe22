// Two or more jobs on shared axes: one subplot per series (training loss, validation loss,
// every validation metric, learning rate; RL returns), one trace per job in each, and the
// differences between their specs. Histories come downsampled; a zoom re-fetches the
// window at full resolution; active jobs are polled for new entries.

import { el, errorBox } from "../dom.js";
import { metricLabel, register, t } from "../i18n.js";
import { specDiff } from "../widgets/specdiff.js";
import { baseLayout, COLORS, CONFIG, plotly, rangeOf } from "../widgets/plot.js";

register({
  en: {
    "compare.title": "Compare {n} jobs",
    "compare.need": "Pick two or more jobs in the list to compare them.",
    "compare.diff": "What differs between the specs",
    "compare.same": "The specs are the same.",
    "compare.field": "Field",
    "compare.seriesLoss": "Training loss",
  },
  ja: {
    "compare.title": "{n} 個のジョブを比較",
    "compare.need": "一覧で 2 つ以上のジョブを選ぶと比較できます。",
    "compare.diff": "設定 (spec) の違い",
    "compare.same": "設定はすべて同じです。",
    "compare.field": "項目",
    "compare.seriesLoss": "訓練損失",
  },
});

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);
const ORDER = ["train_loss", "val_loss", "val_accuracy", "val_f1", "val_log_loss", "val_mse", "val_rmse", "val_mae", "val_r2", "eval_return_mean", "train_return_mean", "epsilon", "lr"];
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function seriesName(key) {
  const named = { train_loss: "term.train_loss", val_loss: "term.val_loss", lr: "term.lr", epsilon: "term.epsilon" }[key];
  if (named) return t(named);
  return metricLabel(key);
}

function seriesOf(runs) {
  const keys = new Set();
  for (const run of runs) for (const e of run.entries) for (const [k, v] of Object.entries(e)) if (ORDER.includes(k) && isNum(v)) keys.add(k);
  return ORDER.filter((k) => keys.has(k));
}

export async function render(root, { ids }, ctx) {
  const { api, signal } = ctx;
  ids = [...new Set(ids)];
  if (ids.length < 2) {
    root.append(el("h1", {}, t("compare.title", { n: ids.length })), el("p", { class: "muted" }, t("compare.need")));
    return;
  }
  const points = Math.max(100, Math.min(1000, Math.floor(8000 / ids.length)));
  const history = (id, params) => api.get(`/jobs/${encodeURIComponent(id)}/history?${new URLSearchParams(params)}`, { signal });
  // The curves first; the specs (for labels and the differences) come meanwhile.
  const runs = await Promise.all(ids.map(async (id, i) => {
    const page = await history(id, { points });
    return { id, job: null, label: id.slice(0, 8), color: COLORS[i % COLORS.length], base: page.items, entries: page.items, downsampled: page.downsampled };
  }));
  const jobs = Promise.all(ids.map((id) => api.get(`/jobs/${encodeURIComponent(id)}?history=none&checkpoints=none`, { signal })));
  jobs.catch(() => {}); // awaited below; not an unhandled rejection meanwhile

  const chart = el("div", { class: "plot-wide", "data-testid": "compare-chart" });
  const chips = el("p");
  const seriesChips = el("div", { class: "chips", "data-testid": "compare-series" });
  const diffBox = el("div");
  root.append(
    el("h1", {}, t("compare.title", { n: runs.length })),
    chips,
    seriesChips,
    el("div", { class: "card" }, chart),
    el("h2", {}, t("compare.diff")),
    diffBox,
  );
  const showChips = () => chips.replaceChildren(...runs.map((run) => el("a", { class: "chip", href: `#/jobs/${run.id}`, style: `border-color:${run.color}` }, `${run.label} · ${run.id}`)));
  showChips();

  const rl = runs.every((r) => r.base.length === 0 || isNum(r.base[0].step));
  // Many jobs: the losses and the first metric at first (each series is a trace per job);
  // the chips above the chart add the others.
  const all = seriesOf(runs);
  const shown = new Set(runs.length > 6 ? all.slice(0, 3) : all);
  const showSeriesChips = () => seriesChips.replaceChildren(...seriesOf(runs).map((key) =>
    el("label", { class: "chip" }, el("input", { type: "checkbox", checked: shown.has(key), "data-series": key,
      onchange: (e) => { e.target.checked ? shown.add(key) : shown.delete(key); draw(); } }), ` ${seriesName(key)}`)));
  showSeriesChips();
  const Plotly = await plotly();
  let range = null;

  async function draw() {
    const series = seriesOf(runs).filter((key) => shown.has(key));
    const columns = Math.min(series.length, 2) || 1;
    const rows = Math.ceil(series.length / columns) || 1;
    const traces = [];
    series.forEach((key, s) => {
      for (const run of runs) {
        const entries = run.entries.filter((e) => isNum(e[key]));
        traces.push({
          type: "scatter",
          mode: entries.length < 60 ? "lines+markers" : "lines",
          name: run.label,
          legendgroup: run.id,
          showlegend: s === 0,
          line: { color: run.color, width: 1.6 },
          marker: { size: 4 },
          x: entries.map((e) => (rl && isNum(e.step) ? e.step : e.epoch)),
          y: entries.map((e) => e[key]),
          meta: { job: run.id, series: key },
          xaxis: `x${s ? s + 1 : ""}`,
          yaxis: `y${s ? s + 1 : ""}`,
        });
      }
    });
    const layout = baseLayout({ extra: { hovermode: "closest", height: Math.max(360, rows * 300), legend: { orientation: "h", y: 1.08, yanchor: "bottom" } } });
    layout.grid = { rows, columns, pattern: "independent", xgap: 0.1, ygap: 0.32 };
    layout.margin.t = 40;
    series.forEach((key, s) => {
      const suffix = s ? String(s + 1) : "";
      layout[`xaxis${suffix}`] = { title: { text: rl ? t("term.step") : t("term.epoch") }, gridcolor: "#eceff3", ...(s ? { matches: "x" } : {}), ...(range && !s ? { range } : {}) };
      layout[`yaxis${suffix}`] = { title: { text: seriesName(key) }, gridcolor: "#eceff3", ...(key === "lr" ? { type: "log" } : {}) };
    });
    chart.style.height = `${layout.height}px`;
    await Plotly.react(chart, traces, layout, CONFIG);
  }

  // Zoom: every downsampled run re-fetched at full resolution inside the window.
  let zoomSeq = 0;
  async function zoom(event) {
    let asked = null;
    for (const key of Object.keys(event)) {
      const axis = key.match(/^(xaxis\d*)\./)?.[1];
      if (axis) asked = rangeOf(event, axis) ?? asked;
    }
    if (!asked) return;
    const seq = ++zoomSeq;
    range = asked === "reset" ? null : asked;
    await Promise.all(runs.map(async (run) => {
      if (!range || !run.downsampled) {
        run.entries = run.base;
        return;
      }
      const [from, to] = rl ? epochWindow(run.base, range) : [Math.max(1, Math.floor(range[0])), Math.ceil(range[1])];
      const params = { after_epoch: from - 1, limit: Math.max(2, to - from + 2) };
      if (params.limit > 5000) params.points = 2000;
      const page = await history(run.id, params);
      run.entries = run.base.filter((e) => e.epoch < from).concat(page.items, run.base.filter((e) => e.epoch > to));
    }));
    if (seq === zoomSeq) await draw();
  }

  // Active jobs: new entries every two seconds (one request per active job).
  let timer = null;
  async function poll() {
    const active = runs.filter((r) => !TERMINAL.has(r.job.status));
    if (!active.length) return;
    await Promise.all(active.map(async (run) => {
      const last = run.base.length ? run.base[run.base.length - 1].epoch : 0;
      const page = await history(run.id, { after_epoch: last, points });
      if (page.items.length) {
        run.base = run.base.concat(page.items);
        if (!range) run.entries = run.base;
      }
      const job = await api.get(`/jobs/${encodeURIComponent(run.id)}?history=none&checkpoints=none`, { signal });
      run.job = job;
    }));
    await draw();
    timer = setTimeout(() => poll().catch((err) => signal.aborted || root.append(errorBox(err))), 2000);
  }
  ctx.onCleanup(() => clearTimeout(timer));

  await draw();
  // Then the specs: what sets each job apart names its curves.
  for (const [i, job] of (await jobs).entries()) runs[i].job = job;
  const diff = specDiff(runs.map((r) => r.job.spec));
  runs.forEach((run, i) => {
    run.label = labelOf(diff, i) || run.id;
  });
  showChips();
  diffBox.replaceChildren(diffTable(diff, runs));
  await draw();
  chart.on("plotly_relayout", (event) => zoom(event).catch((err) => root.append(errorBox(err))));
  timer = setTimeout(() => poll().catch((err) => signal.aborted || root.append(errorBox(err))), 2000);
}

// A short name for run i from what sets it apart: "sgd", "adam lr=0.01", "batch_size=16".
function labelOf(diff, i) {
  const byName = diff.rows.some((r) => r.path === "optimizer.name");
  const parts = [];
  for (const row of diff.rows) {
    const value = row.values[i];
    if (value === "") continue;
    if (row.path === "optimizer.name") parts.push(value);
    else if (!byName || !row.path.startsWith("optimizer.") || row.path === "optimizer.lr") parts.push(`${row.path.split(".").pop()}=${value}`);
  }
  const label = parts.join(" ");
  return label.length <= 48 ? label : `${label.slice(0, 45)}…`;
}

function epochWindow(entries, [x0, x1]) {
  const inside = entries.filter((e) => (e.step ?? e.epoch) >= x0 && (e.step ?? e.epoch) <= x1);
  if (!inside.length) return [1, 1];
  return [Math.max(1, inside[0].epoch - 1), inside[inside.length - 1].epoch + 1];
}

function diffTable(diff, runs) {
  if (!diff.rows.length) return el("p", { class: "muted", "data-testid": "spec-diff" }, t("compare.same"));
  return el("table", { "data-testid": "spec-diff" },
    el("thead", {}, el("tr", {}, el("th", {}, t("compare.field")), runs.map((r) => el("th", { class: "mono" }, el("a", { href: `#/jobs/${r.id}` }, r.id))))),
    el("tbody", {}, diff.rows.map((row) => el("tr", { "data-field": row.path }, el("td", { class: "mono" }, row.path), row.values.map((v) => el("td", { class: "mono" }, v))))));
}
