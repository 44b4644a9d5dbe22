// A job's status as a coloured chip, and its progress as a bar that updates in place.

import { el } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: { "progress.batch": "batch {batch}/{batches}" },
  ja: { "progress.batch": "バッチ {batch}/{batches}" },
});

export function statusChip(status) {
  return el("span", { class: `status status-${status}`, "data-status": status }, t(`status.${status}`));
}

// progress: {epoch, epochs, batch?, batches?, step?, steps?, fraction}
export function progressBar(progress, attrs = {}) {
  const bar = el("progress", { max: 1, value: 0, "data-testid": "job-progress", ...attrs });
  const text = el("span", { class: "progress-text" });
  const node = el("span", { class: "progress" }, bar, text);
  const update = (p) => {
    if (!p) return;
    const fraction = Math.max(0, Math.min(1, Number(p.fraction) || 0));
    bar.value = fraction;
    bar.dataset.fraction = String(fraction);
    const counted = p.steps ? `${p.step ?? 0}/${p.steps} ${t("term.step")}` : `${p.epoch}/${p.epochs} ${t("term.epoch")}`;
    const batch = p.batches ? ` · ${t("progress.batch", { batch: p.batch ?? 0, batches: p.batches })}` : "";
    text.textContent = `${Math.round(fraction * 100)}% · ${counted}${batch}`;
  };
  update(progress);
  return { node, update };
}
