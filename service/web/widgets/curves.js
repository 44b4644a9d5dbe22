// A job's training curves: one Plotly chart per group (loss, validation metrics, learning
// rate; RL: returns with the evaluation spread as a band, epsilon). render() draws all
// entries with Plotly.react; extend() appends live ones with Plotly.extendTraces.

import { el } from "../dom.js";
import { metricLabel } from "../i18n.js";
import { baseLayout, COLORS, CONFIG, plotly, rangeOf } from "./plot.js";

const HIDDEN_METRICS = new Set(["val_loss"]);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function metricKeys(entries) {
  const keys = new Set();
  for (const e of entries) for (const k of Object.keys(e)) if (k.startsWith("val_") && !HIDDEN_METRICS.has(k) && isNum(e[k])) keys.add(k);
  return [...keys].sort();
}

function has(entries, key) {
  return entries.some((e) => isNum(e[key]));
}

// The charts for these entries: [{id, testid, title, yTitle, traces: [{name, y(e), ...style}]}]
export function plan(entries, { rl, t }) {
  const label = metricLabel;
  const charts = [];
  if (rl) {
    const traces = [];
    if (has(entries, "eval_return_mean")) {
      const std = (e) => (isNum(e.eval_return_std) ? e.eval_return_std : 0);
      traces.push(
        { key: "eval_upper", name: "+σ", y: (e) => (isNum(e.eval_return_mean) ? e.eval_return_mean + std(e) : null), line: { width: 0 }, showlegend: false, hoverinfo: "skip" },
        { key: "eval_lower", name: "−σ", y: (e) => (isNum(e.eval_return_mean) ? e.eval_return_mean - std(e) : null), line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(47,111,223,0.18)", showlegend: false, hoverinfo: "skip" },
        { key: "eval_return_mean", name: t("term.eval_return"), y: (e) => e.eval_return_mean, line: { color: COLORS[0] } },
      );
    }
    if (has(entries, "train_return_mean")) traces.push({ key: "train_return_mean", name: t("term.train_return"), y: (e) => e.train_return_mean, line: { color: COLORS[1] } });
    charts.push({ id: "return", testid: "curve-return", title: t("term.return"), yTitle: t("term.return"), traces });
    if (has(entries, "epsilon")) charts.push({ id: "epsilon", testid: "curve-epsilon", title: t("term.epsilon"), yTitle: "ε", traces: [{ key: "epsilon", name: "ε", y: (e) => e.epsilon, line: { color: COLORS[2] } }] });
    if (has(entries, "train_loss")) charts.push({ id: "loss", testid: "curve-loss", title: t("term.loss"), yTitle: t("term.loss"), traces: [{ key: "train_loss", name: t("term.train_loss"), y: (e) => e.train_loss }] });
    return charts;
  }
  const loss = [{ key: "train_loss", name: t("term.train_loss"), y: (e) => e.train_loss, line: { color: COLORS[0] } }];
  if (has(entries, "val_loss")) loss.push({ key: "val_loss", name: t("term.val_loss"), y: (e) => e.val_loss, line: { color: COLORS[1] } });
  charts.push({ id: "loss", testid: "curve-loss", title: t("term.loss"), yTitle: t("term.loss"), traces: loss });
  const metrics = metricKeys(entries);
  if (metrics.length) {
    charts.push({
      id: "metrics",
      testid: "curve-metrics",
      title: t("curves.metrics"),
      grid: metrics.length,
      traces: metrics.map((key, i) => ({ key, name: label(key), y: (e) => e[key], axis: i, line: { color: COLORS[(i + 2) % COLORS.length] } })),
    });
  }
  if (has(entries, "lr")) charts.push({ id: "lr", testid: "curve-lr", title: t("term.lr"), yTitle: t("term.lr"), traces: [{ key: "lr", name: t("term.lr"), y: (e) => e.lr, line: { color: COLORS[4], shape: "hv" } }] });
  return charts;
}

const signature = (charts) => charts.map((c) => `${c.id}:${c.traces.map((tr) => tr.key).join(",")}`).join("|");

export class Curves {
  constructor(container, { t, rl, onRange }) {
    this.container = container;
    this.t = t;
    this.rl = rl;
    this.onRange = onRange; // ([x0, x1] | "reset") => void, after a zoom by the user
    this.charts = [];
    this.divs = new Map();
    this.sig = "";
    this.range = null;
    this.syncing = false;
  }

  x(e) {
    return this.rl && isNum(e.step) ? e.step : e.epoch;
  }

  xTitle() {
    return this.rl ? this.t("term.step") : this.t("term.epoch");
  }

  div(chart) {
    let div = this.divs.get(chart.id);
    if (!div) {
      div = el("div", { class: "plot", "data-testid": chart.testid, "data-chart": chart.id });
      this.container.append(el("div", { class: "card" }, div));
      this.divs.set(chart.id, div);
    }
    return div;
  }

  traceData(chart, entries) {
    return chart.traces.map((tr) => {
      const { key, y, axis, ...style } = tr;
      const trace = { type: "scatter", mode: "lines", x: entries.map((e) => this.x(e)), y: entries.map((e) => (isNum(y(e)) ? y(e) : null)), meta: key, ...style };
      if (entries.length < 60) trace.mode = "lines+markers";
      if (axis) Object.assign(trace, { xaxis: `x${axis + 1}`, yaxis: `y${axis + 1}` });
      if (tr.fill) trace.type = "scatter"; // fill between traces needs SVG scatter
      if (key === "eval_upper") trace.type = "scatter";
      return trace;
    });
  }

  layout(chart) {
    const layout = baseLayout({ title: chart.title, xTitle: this.xTitle(), yTitle: chart.yTitle || "" });
    if (chart.grid) {
      const columns = Math.min(chart.grid, 3);
      const rows = Math.ceil(chart.grid / columns);
      layout.grid = { rows, columns, pattern: "independent", xgap: 0.12, ygap: 0.3 };
      chart.traces.forEach((tr, i) => {
        const suffix = i === 0 ? "" : String(i + 1);
        layout[`xaxis${suffix}`] = { gridcolor: "#eceff3", title: { text: this.xTitle() }, ...(this.range ? { range: this.range } : {}) };
        layout[`yaxis${suffix}`] = { gridcolor: "#eceff3", title: { text: tr.name } };
      });
      layout.height = 300 * rows;
      layout.showlegend = false;
    } else if (this.range) {
      layout.xaxis.range = this.range;
    }
    return layout;
  }

  async render(entries) {
    const Plotly = await plotly();
    this.charts = plan(entries, { rl: this.rl, t: this.t });
    this.sig = signature(this.charts);
    const live = new Set(this.charts.map((c) => c.id));
    for (const [id, div] of this.divs) {
      if (!live.has(id)) {
        Plotly.purge(div);
        div.parentElement.remove();
        this.divs.delete(id);
      }
    }
    for (const chart of this.charts) {
      const div = this.div(chart);
      if (chart.grid) div.style.height = `${300 * Math.ceil(chart.grid / Math.min(chart.grid, 3))}px`;
      await Plotly.react(div, this.traceData(chart, entries), this.layout(chart), CONFIG);
      if (!div.dataset.listening) {
        div.dataset.listening = "1";
        div.on("plotly_relayout", (event) => this.relayout(event));
      }
    }
  }

  // Live entries: appended to every trace, unless they bring a series not drawn yet.
  async extend(newEntries, allEntries) {
    if (!newEntries.length) return;
    if (signature(plan(allEntries, { rl: this.rl, t: this.t })) !== this.sig) return this.render(allEntries);
    const Plotly = await plotly();
    for (const chart of this.charts) {
      const data = this.traceData(chart, newEntries);
      const div = this.divs.get(chart.id);
      await Plotly.extendTraces(div, { x: data.map((d) => d.x), y: data.map((d) => d.y) }, data.map((_, i) => i));
    }
  }

  relayout(event) {
    if (this.syncing) return;
    let range = null;
    for (const key of Object.keys(event)) {
      const axis = key.match(/^(xaxis\d*)\./)?.[1];
      if (axis) range = rangeOf(event, axis) ?? range;
    }
    if (!range) return;
    this.range = range === "reset" ? null : range;
    this.onRange?.(range);
  }

  // Show the same x range on every chart (after a zoom on one of them).
  async syncRange() {
    const Plotly = await plotly();
    this.syncing = true;
    try {
      for (const chart of this.charts) {
        const div = this.divs.get(chart.id);
        const update = {};
        const axes = chart.grid ? chart.traces.map((_, i) => (i === 0 ? "xaxis" : `xaxis${i + 1}`)) : ["xaxis"];
        for (const axis of axes) {
          if (this.range) update[`${axis}.range`] = this.range;
          else update[`${axis}.autorange`] = true;
        }
        await Plotly.relayout(div, update);
      }
    } finally {
      this.syncing = false;
    }
  }

  pointCount() {
    let most = 0;
    for (const div of this.divs.values()) for (const trace of div.data || []) most = Math.max(most, trace.x.length);
    return most;
  }
}
