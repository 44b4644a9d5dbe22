// A job's history as the page holds it: a downsampled base from /history?points=N, live
// entries appended after it, and, while zoomed in, a full-resolution window.

export const POINTS = 1000;
const PAGE = 10000;

export class History {
  constructor(api, jobId) {
    this.api = api;
    this.jobId = jobId;
    this.base = [];
    this.tail = [];
    this.detail = null; // {from, to, items}: full resolution inside epochs from..to
    this.total = 0;
    this.downsampled = false;
    this.lastEventId = null; // the job's latest event when the history was first read
  }

  url(params) {
    return `/jobs/${encodeURIComponent(this.jobId)}/history?${new URLSearchParams(params)}`;
  }

  async load(signal) {
    const page = await this.api.get(this.url({ points: POINTS }), { signal });
    this.base = page.items;
    this.total = page.total;
    this.downsampled = page.downsampled;
    this.lastEventId ??= page.last_event_id;
    // Live entries that came while the request ran and are newer than its answer stay.
    const last = this.base.length ? this.base[this.base.length - 1].epoch : 0;
    this.tail = this.tail.filter((e) => e.epoch > last);
    this.total += this.tail.length;
    return this;
  }

  lastEpoch() {
    const all = this.tail.length ? this.tail : this.base;
    return all.length ? all[all.length - 1].epoch : 0;
  }

  // Entries in epoch order: the detail window replaces the base inside it.
  entries() {
    const all = this.base.concat(this.tail);
    if (!this.detail) return all;
    const { from, to, items } = this.detail;
    return all.filter((e) => e.epoch < from).concat(items, all.filter((e) => e.epoch > to));
  }

  // A live entry; false when it is one the page already has (a replayed event).
  add(entry) {
    if (entry.epoch <= this.lastEpoch()) return false;
    this.tail.push(entry);
    this.total += 1;
    return true;
  }

  // The job resumed from epoch n's checkpoint: what came after it did not happen.
  rewind(epoch) {
    const keep = (e) => e.epoch <= epoch;
    this.base = this.base.filter(keep);
    this.tail = this.tail.filter(keep);
    if (this.detail) this.detail.items = this.detail.items.filter(keep);
    this.total = Math.min(this.total, epoch);
  }

  // Too many live entries to draw in full: ask the server to downsample again.
  needsCompaction() {
    return this.tail.length > POINTS;
  }

  // Full resolution between epochs from and to (downsampled again only if still huge).
  async zoom(from, to, signal) {
    if (!this.downsampled && !this.needsCompaction()) return false;
    const first = Math.max(Math.floor(from), 1);
    const limit = Math.max(Math.ceil(to) - first + 2, 2);
    const params = { after_epoch: first - 1, limit: Math.min(limit, 100000) };
    if (limit > 5 * POINTS) params.points = 2 * POINTS;
    const page = await this.api.get(this.url(params), { signal });
    this.detail = { from: first, to: first + limit - 1, items: page.items };
    return true;
  }

  unzoom() {
    this.detail = null;
  }

  // Every entry, page by page (for a download).
  async all(signal) {
    const items = [];
    let after = 0;
    for (;;) {
      const page = await this.api.get(this.url({ after_epoch: after, limit: PAGE }), { signal });
      items.push(...page.items);
      if (page.items.length < PAGE) return items;
      after = page.items[page.items.length - 1].epoch;
    }
  }
}

export function toCSV(items) {
  const columns = [];
  for (const e of items) for (const k of Object.keys(e)) if (!columns.includes(k)) columns.push(k);
  const cell = (v) => (v === null || v === undefined ? "" : typeof v === "string" && /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : String(v));
  return [columns.join(","), ...items.map((e) => columns.map((c) => cell(e[c])).join(","))].join("\n") + "\n";
}

export function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
