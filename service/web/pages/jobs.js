// The jobs list: status, kind, dataset, live progress, the main metric, a text filter,
// cancel per active job, and checkboxes to compare jobs (or one click per group).

import { el, errorBox, fmt, fmtTime } from "../dom.js";
import { metricLabel, register, t } from "../i18n.js";
import { progressBar, statusChip } from "../widgets/status.js";

register({
  en: {
    "jobs.title": "Jobs",
    "jobs.filter": "Filter by id, status, kind, dataset…",
    "jobs.compare": "Compare selected ({n})",
    "jobs.compareHint": "Tick two or more jobs to overlay their curves.",
    "jobs.groups": "Compare at once:",
    "jobs.group": "{kind} on {dataset} ({n} jobs)",
    "jobs.empty": "No jobs yet. Start one from “New job”.",
    "jobs.metric": "Main metric",
    "jobs.cancel": "Cancel",
    "jobs.select": "Select job {id} to compare",
    "jobs.shown": "{shown} of {total} jobs",
  },
  ja: {
    "jobs.title": "ジョブ",
    "jobs.filter": "ID・状態・種類・データセットで絞り込み…",
    "jobs.compare": "選択したジョブを比較 ({n})",
    "jobs.compareHint": "2 つ以上のジョブを選ぶと学習曲線を重ねて比較できます。",
    "jobs.groups": "まとめて比較:",
    "jobs.group": "{dataset} の {kind} ({n} ジョブ)",
    "jobs.empty": "ジョブはまだありません。「新しいジョブ」から始めましょう。",
    "jobs.metric": "主な評価指標",
    "jobs.cancel": "キャンセル",
    "jobs.select": "ジョブ {id} を比較対象に選ぶ",
    "jobs.shown": "{total} 件中 {shown} 件",
  },
});

const ACTIVE = new Set(["queued", "running"]);
const LIMIT = 200;
const selected = new Set(); // kept while the tab lives, so going back keeps the ticks

export async function render(root, _params, ctx) {
  const { api, signal, navigate } = ctx;
  const filter = el("input", { type: "search", placeholder: t("jobs.filter"), "data-testid": "job-filter", "aria-label": t("jobs.filter"), oninput: () => applyFilter() });
  const compare = el("button", { class: "primary", "data-testid": "compare-button", onclick: () => navigate(`#/compare?ids=${[...selected].join(",")}`) });
  const count = el("span", { class: "hint" });
  const groups = el("div", { class: "chips", "data-testid": "compare-groups" });
  const body = el("tbody");
  const tableNode = el("table", { "data-testid": "jobs-table" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), [t("term.job"), t("term.status"), t("term.kind"), t("term.dataset"), t("term.progress"), t("jobs.metric"), t("term.created"), ""].map((h) => el("th", {}, h)))),
    body);
  const empty = el("p", { class: "muted", hidden: true }, t("jobs.empty"));
  root.append(
    el("h1", {}, t("jobs.title")),
    el("div", { class: "toolbar" }, filter, compare, count),
    el("p", { class: "hint" }, t("jobs.compareHint")),
    groups,
    tableNode,
    empty,
  );

  const rows = new Map(); // job id -> {tr, progress, job}
  // Datasets by name, not id (one request; ids are shown when a name is missing).
  const datasetNames = new Map();
  try {
    for (const d of (await api.get("/datasets?limit=500", { signal })).items) datasetNames.set(d.id, d.name);
  } catch {
    // names are a nicety: the list works without them
  }

  function updateCompare() {
    for (const id of [...selected]) if (!rows.has(id)) selected.delete(id);
    compare.textContent = t("jobs.compare", { n: selected.size });
    compare.disabled = selected.size < 2;
  }

  function rowFor(job) {
    const progress = progressBar(job.progress);
    const check = el("input", { type: "checkbox", "data-testid": "job-select", checked: selected.has(job.id), "aria-label": t("jobs.select", { id: job.id }),
      onchange: (e) => { e.target.checked ? selected.add(job.id) : selected.delete(job.id); updateCompare(); } });
    const cells = {
      status: el("td"), metric: el("td", { class: "num" }), action: el("td"),
    };
    const tr = el("tr", { "data-testid": "job-row", "data-job-id": job.id },
      el("td", {}, check),
      el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id)),
      cells.status,
      el("td", {}, job.kind),
      el("td", {}, job.dataset_id ? el("a", { href: `#/datasets/${job.dataset_id}`, title: job.dataset_id }, datasetNames.get(job.dataset_id) || job.dataset_id) : el("span", { class: "muted" }, job.task)),
      el("td", {}, progress.node),
      cells.metric,
      el("td", { class: "hint" }, fmtTime(job.created_at)),
      cells.action);
    const row = { tr, progress, cells, job: null };
    updateRow(row, job);
    return row;
  }

  function updateRow(row, job) {
    const before = row.job;
    row.job = job;
    row.tr.dataset.status = job.status;
    row.tr.dataset.search = [job.id, job.status, t(`status.${job.status}`), job.kind, job.task, job.dataset_id || "", datasetNames.get(job.dataset_id) || ""].join(" ").toLowerCase();
    row.progress.update(job.progress);
    if (before?.status !== job.status) row.cells.status.replaceChildren(statusChip(job.status));
    const m = job.main_metric;
    row.cells.metric.replaceChildren(...(m ? [el("span", { class: "hint" }, metricLabel(m.name)), " ", el("span", { class: "mono" }, fmt(m.value))] : ["–"]));
    if (before?.status !== job.status) {
      row.cells.action.replaceChildren(ACTIVE.has(job.status)
        ? el("button", { class: "danger", "data-testid": "job-cancel", onclick: (e) => cancel(job.id, e.target) }, t("jobs.cancel"))
        : "");
    }
  }

  async function cancel(id, button) {
    button.disabled = true;
    try {
      updateRow(rows.get(id), await api.post(`/jobs/${encodeURIComponent(id)}/cancel`, {}, { signal }));
    } catch (err) {
      button.disabled = false;
      button.after(errorBox(err));
    }
  }

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const { tr } of rows.values()) {
      const hit = words.every((w) => tr.dataset.search.includes(w));
      tr.classList.toggle("hidden", !hit);
      shown += hit;
    }
    count.textContent = t("jobs.shown", { shown, total: rows.size });
  }

  // One link per group of jobs on the same dataset with the same kind: the optimizer
  // comparison of the course is one click away.
  function showGroups(jobs) {
    const byGroup = new Map();
    for (const job of jobs) {
      if (!job.dataset_id) continue;
      const key = `${job.kind}\u0000${job.dataset_id}`;
      if (!byGroup.has(key)) byGroup.set(key, []);
      byGroup.get(key).push(job);
    }
    const links = [...byGroup.values()].filter((g) => g.length >= 2).slice(0, 8).map((g) =>
      el("a", { class: "chip", "data-testid": "compare-group", href: `#/compare?ids=${g.slice(0, 20).map((j) => j.id).join(",")}` },
        t("jobs.group", { kind: g[0].kind, dataset: datasetNames.get(g[0].dataset_id) || g[0].dataset_id, n: Math.min(g.length, 20) })));
    groups.replaceChildren(...(links.length ? [el("span", { class: "hint" }, t("jobs.groups")), ...links] : []));
  }

  async function refresh() {
    const page = await api.get(`/jobs?limit=${LIMIT}`, { signal });
    const seen = new Set();
    page.items.forEach((job, i) => {
      seen.add(job.id);
      let row = rows.get(job.id);
      if (row) updateRow(row, job);
      else rows.set(job.id, (row = rowFor(job)));
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
    });
    for (const [id, row] of rows) if (!seen.has(id)) { row.tr.remove(); rows.delete(id); }
    empty.hidden = rows.size > 0;
    tableNode.hidden = rows.size === 0;
    showGroups(page.items);
    updateCompare();
    applyFilter();
    return page.items.some((j) => ACTIVE.has(j.status));
  }

  // Progress moves live: poll once a second while a job is active (one request for the
  // whole list; an event stream per row would use up the browser's connections).
  let timer = null;
  const loop = async () => {
    let active = false;
    try {
      active = await refresh();
    } catch (err) {
      if (signal.aborted) return;
    }
    if (!signal.aborted) timer = setTimeout(loop, active ? 1000 : 5000);
  };
  ctx.onCleanup(() => clearTimeout(timer));
  await refresh().then((active) => { timer = setTimeout(loop, active ? 1000 : 5000); });
}
