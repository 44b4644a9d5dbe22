// One job: live curves (downsampled history, then the event stream), the spec, checkpoints,
// final metrics, confusion matrix, mistakes gallery, and the error of a failed job.

import { el, errorBox } from "../dom.js";
import { register, t } from "../i18n.js";
import { Curves } from "../widgets/curves.js";
import { History, saveFile, toCSV } from "../widgets/history.js";
import { checkpointsTable, confusion, metricsTables, mistakesGallery } from "../widgets/results.js";
import { progressBar, statusChip } from "../widgets/status.js";

register({
  en: {
    "job.title": "Job {id}",
    "job.curves": "Curves",
    "job.spec": "Spec",
    "job.error": "Error",
    "job.cancel": "Cancel",
    "job.download": "Download history:",
    "job.downsampled": "Showing {shown} of {total} points (downsampled); zoom in for every point.",
    "job.model": "Model",
    "job.live": "live",
    "job.noHistory": "No history yet: the curves appear with the first epoch.",
    "curves.metrics": "Validation metrics",
  },
  ja: {
    "job.title": "ジョブ {id}",
    "job.curves": "学習曲線",
    "job.spec": "設定 (spec)",
    "job.error": "エラー",
    "job.cancel": "キャンセル",
    "job.download": "履歴をダウンロード:",
    "job.downsampled": "{total} 点のうち {shown} 点を表示しています (間引き済み)。拡大するとすべての点を表示します。",
    "job.model": "モデル",
    "job.live": "ライブ",
    "job.noHistory": "履歴はまだありません。最初のエポックが終わると曲線が表示されます。",
    "curves.metrics": "検証の評価指標",
  },
});

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);

export async function render(root, { id }, ctx) {
  const { api, signal } = ctx;
  const path = `/jobs/${encodeURIComponent(id)}`;
  const history = new History(api, id);
  let [job] = await Promise.all([api.get(`${path}?history=none`, { signal }), history.load(signal)]);
  const rl = job.task === "reinforcement";

  const status = el("span", { "data-testid": "job-status" });
  const progress = progressBar(job.progress);
  const cancel = el("button", { class: "danger", "data-testid": "job-cancel", onclick: () => cancelJob() }, t("job.cancel"));
  const note = el("p", { class: "hint", "data-testid": "downsample-note" });
  const empty = el("p", { class: "muted" }, t("job.noHistory"));
  const plots = el("div", { class: "curves" });
  const finals = el("div");
  const download = (format) =>
    el("button", { class: "link", "data-testid": `download-${format}`, onclick: () => downloadHistory(format) }, format.toUpperCase());
  root.append(
    el("h1", {}, t("job.title", { id })),
    el("div", { class: "row" }, status, progress.node, cancel, el("span", { class: "muted" }, `${t("term.kind")}: ${job.kind} · ${t("term.task")}: ${job.task}`),
      job.dataset_id ? el("a", { href: `#/datasets/${job.dataset_id}` }, `${t("term.dataset")} ${job.dataset_id}`) : null),
    el("h2", {}, t("job.curves")),
    empty,
    plots,
    el("div", { class: "toolbar" }, note, el("span", { class: "hint" }, t("job.download")), download("csv"), download("json")),
    finals,
  );

  const curves = new Curves(plots, { t, rl, onRange: (range) => zoom(range) });
  let zoomSeq = 0;

  function showStatus() {
    status.replaceChildren(statusChip(job.status));
    status.dataset.status = job.status;
    cancel.hidden = TERMINAL.has(job.status);
  }

  function showNote() {
    const shown = curves.pointCount();
    const downsampled = history.downsampled && !history.detail;
    note.textContent = downsampled ? t("job.downsampled", { shown, total: history.total }) : "";
    empty.hidden = history.base.length + history.tail.length > 0;
  }

  async function redraw() {
    await curves.render(history.entries());
    showNote();
  }

  async function zoom(range) {
    const seq = ++zoomSeq;
    if (range === "reset") {
      history.unzoom();
      await redraw();
    } else {
      const [from, to] = rl ? stepsToEpochs(history.entries(), range) : range;
      if (await history.zoom(from, to, signal)) {
        if (seq !== zoomSeq) return;
        await redraw();
      }
    }
    await curves.syncRange();
  }

  async function cancelJob() {
    cancel.disabled = true;
    try {
      job = await api.post(`${path}/cancel`, {}, { signal });
      showStatus();
    } catch (err) {
      cancel.after(errorBox(err));
    }
  }

  async function downloadHistory(format) {
    const items = await history.all(signal);
    if (format === "csv") saveFile(`job-${id}-history.csv`, toCSV(items), "text/csv");
    else saveFile(`job-${id}-history.json`, JSON.stringify(items, null, 1), "application/json");
  }

  async function showFinals() {
    const labels = job.model_id ? await api.get(`/models/${encodeURIComponent(job.model_id)}`, { signal }).then((m) => m.output?.labels, () => null) : null;
    const mistakes = job.task === "classification" && job.status === "succeeded"
      ? await api.get(`${path}/mistakes?limit=36`, { signal }).catch(() => null)
      : null;
    const matrix = await confusion(job.metrics, labels);
    const parts = [
      job.error ? el("section", {}, el("h2", {}, t("job.error")), el("p", { class: "error", "data-testid": "job-error" }, `${job.error.type}: ${job.error.message}`)) : null,
      job.model_id ? el("p", {}, `${t("job.model")}: `, el("a", { href: `#/models/${job.model_id}`, "data-testid": "job-model" }, job.model_id)) : null,
      metricsTables(job.metrics),
      matrix,
      mistakesGallery(mistakes),
      checkpointsTable(job.checkpoints),
      el("section", {}, el("h2", {}, t("job.spec")), el("pre", { "data-testid": "job-spec" }, JSON.stringify(job.spec, null, 2))),
    ];
    finals.replaceChildren(...parts.filter(Boolean));
    await matrix?.draw();
  }

  showStatus();
  await Promise.all([redraw(), showFinals()]); // the tables need not wait for Plotly
  if (TERMINAL.has(job.status)) return;

  // Live: epochs are drawn in batches (one Plotly call per animation frame at most).
  let pending = [];
  let frame = null;
  const flush = async () => {
    frame = null;
    const fresh = pending.splice(0);
    if (history.needsCompaction() && !history.detail) {
      await history.load(signal);
      await redraw();
    } else {
      await curves.extend(fresh, history.entries());
      showNote();
    }
  };
  ctx.onCleanup(() => frame && cancelAnimationFrame(frame));
  let seen = 0; // events handled so far: a status refresh older than one of them is dropped
  const onEvent = async ({ type, data }) => {
    seen += 1;
    if (type === "epoch") {
      if (history.add(data)) {
        pending.push(data);
        frame ??= requestAnimationFrame(flush);
      }
    } else if (type === "progress") {
      progress.update(data);
    } else if (type === "rewind") {
      history.rewind(data.epoch);
      pending = [];
      await redraw();
    } else if (type === "checkpoint") {
      // Retention may have removed older ones in the same step.
      const gone = new Set([data.epoch, ...(data.removed || [])]);
      job.checkpoints = [...(job.checkpoints || []).filter((c) => !gone.has(c.epoch)), data];
      finals.querySelector("[data-testid=job-checkpoints]")?.replaceWith(checkpointsTable(job.checkpoints));
    } else if (type === "status") {
      job.status = data.status;
      showStatus();
      if (TERMINAL.has(data.status)) {
        job = await api.get(`${path}?history=none`, { signal });
        progress.update(job.progress);
        showStatus();
        await showFinals();
      }
    }
  };
  // The stream follows on from the history just read (no replay of what the page has); the
  // status is read again once it is open, in case it changed in between.
  const onOpen = async () => {
    const before = seen;
    try {
      const now = await api.get(`${path}?history=none`, { signal });
      if (seen === before && !TERMINAL.has(job.status)) {
        job = now;
        progress.update(job.progress);
        showStatus();
      }
    } catch (err) {
      if (!signal.aborted) console.warn("job status not refreshed", err);
    }
  };
  const lastEventId = history.lastEventId ?? null;
  api
    .events(id, { onEvent, onOpen, signal, lastEventId })
    .catch((err) => signal.aborted || root.append(errorBox(err)));
}

// RL curves are drawn against environment steps; history windows are asked for by epoch.
function stepsToEpochs(entries, [x0, x1]) {
  const inside = entries.filter((e) => (e.step ?? e.epoch) >= x0 && (e.step ?? e.epoch) <= x1);
  if (!inside.length) return [0, 0];
  return [inside[0].epoch - 1, inside[inside.length - 1].epoch + 1];
}
