// Start a job: dataset, task, target, kind and optimizer -> the spec as editable JSON ->
// POST /jobs. A 422 is shown next to the field its `loc` names (or next to the spec).

import { ApiError } from "../api.js";
import { describe, el } from "../dom.js";
import { register, t } from "../i18n.js";

register({
  en: {
    "newjob.title": "New job",
    "newjob.help": "Choose the data and the model; the spec below is what will be sent, and you can edit it.",
    "newjob.task": "Task",
    "newjob.target": "Target column",
    "newjob.kind": "Model kind",
    "newjob.lr": "Learning rate",
    "newjob.epochs": "Epochs",
    "newjob.batch": "Batch size",
    "newjob.spec": "Spec (JSON, editable)",
    "newjob.submit": "Start job",
    "newjob.optimizers": "Start one job per optimizer (SGD, momentum, AdaGrad, RMSProp, Adam) and compare",
    "newjob.badJson": "The spec is not valid JSON: {message}",
    "newjob.failed": "The job was not started: {message}",
    "newjob.noDatasets": "No datasets yet: upload one first (POST /datasets).",
    "newjob.none": "(none)",
    "task.classification": "classification",
    "task.regression": "regression",
    "task.forecasting": "forecasting",
  },
  ja: {
    "newjob.title": "新しいジョブ",
    "newjob.help": "データとモデルを選んでください。下の設定 (spec) がそのまま送信されます。編集もできます。",
    "newjob.task": "タスク",
    "newjob.target": "目的変数の列",
    "newjob.kind": "モデルの種類",
    "newjob.lr": "学習率",
    "newjob.epochs": "エポック数",
    "newjob.batch": "バッチサイズ",
    "newjob.spec": "設定 (JSON、編集可)",
    "newjob.submit": "ジョブを開始",
    "newjob.optimizers": "最適化手法ごとにジョブを開始して比較 (SGD・モーメンタム・AdaGrad・RMSProp・Adam)",
    "newjob.badJson": "設定が正しい JSON ではありません: {message}",
    "newjob.failed": "ジョブを開始できませんでした: {message}",
    "newjob.noDatasets": "データセットがまだありません。先にアップロードしてください (POST /datasets)。",
    "newjob.none": "(なし)",
    "task.classification": "分類",
    "task.regression": "回帰",
    "task.forecasting": "時系列予測",
  },
});

const KINDS = { linear: { kind: "linear" }, mlp: { kind: "mlp", hidden_layers: [64, 32] }, cnn: { kind: "cnn", architecture: "simple" }, rnn: { kind: "rnn" } };
const OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"];
const COURSE_OPTIMIZERS = ["sgd", "momentum", "adagrad", "rmsprop", "adam"];
const TASKS = ["classification", "regression", "forecasting"];

// A 422's loc as the spec's dotted path: no "body", no union tag (optimizer.adam.lr -> optimizer.lr).
export function fieldPath(loc, spec) {
  const parts = loc.map(String);
  if (parts[0] === "body") parts.shift();
  if (parts[0] === "optimizer" && parts[1] === spec?.optimizer?.name) parts.splice(1, 1);
  if (parts[0] === "model" && parts[1] === spec?.model?.kind) parts.splice(1, 1);
  return parts.join(".");
}

// The form field a plain-text 422 is about ("unknown target column 'x'" -> target): the
// first field name the message mentions as a word.
export function mentionedField(message, paths) {
  let best = null;
  for (const path of paths) {
    const name = path === "optimizer.name" ? "optimizer" : path.split(".").pop();
    const at = message.search(new RegExp(`(^|[^\\w])${name}([^\\w]|$)`));
    if (at !== -1 && (best === null || at < best.at)) best = { path, at };
  }
  return best?.path ?? null;
}

export async function render(root, params, { api, signal, navigate }) {
  const datasets = (await api.get("/datasets?limit=200", { signal })).items;
  const field = (name, label, input) => el("div", { class: "field", "data-field-name": name }, el("label", { for: `f-${name}` }, label), input);
  const select = (testid, options, value) => el("select", { "data-testid": testid, id: `f-${testid}` }, options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  const chosen = datasets.find((d) => d.id === params.dataset) || datasets[0];

  const inputs = {
    dataset_id: select("newjob-dataset", datasets.map((d) => [d.id, `${d.name} (${d.id})`]), chosen?.id),
    task: select("newjob-task", TASKS.map((k) => [k, t(`task.${k}`)]), "classification"),
    target: select("newjob-target", [], ""),
    "model.kind": select("newjob-kind", Object.keys(KINDS).map((k) => [k, k]), "mlp"),
    "optimizer.name": select("newjob-optimizer", OPTIMIZERS.map((k) => [k, k]), "adam"),
    "optimizer.lr": el("input", { type: "number", step: "any", value: "0.001", "data-testid": "newjob-lr", id: "f-newjob-lr" }),
    "training.epochs": el("input", { type: "number", value: "20", "data-testid": "newjob-epochs", id: "f-newjob-epochs" }),
    "training.batch_size": el("input", { type: "number", value: "32", "data-testid": "newjob-batch", id: "f-newjob-batch" }),
  };
  const labels = { dataset_id: t("term.dataset"), task: t("newjob.task"), target: t("newjob.target"), "model.kind": t("newjob.kind"), "optimizer.name": t("term.optimizer"), "optimizer.lr": t("newjob.lr"), "training.epochs": t("newjob.epochs"), "training.batch_size": t("newjob.batch") };
  const spec = el("textarea", { "data-testid": "newjob-spec", id: "f-spec", spellcheck: "false" });
  const general = el("div", { "data-testid": "newjob-error" });
  const fields = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, field(name, labels[name], input)]));
  const specField = el("div", { class: "field", "data-field-name": "spec" }, el("label", { for: "f-spec" }, t("newjob.spec")), spec);
  const submit = el("button", { type: "submit", class: "primary", "data-testid": "newjob-submit" }, t("newjob.submit"));
  const course = el("button", { type: "button", "data-testid": "newjob-optimizers", onclick: () => startCourse() }, t("newjob.optimizers"));
  // novalidate: the API judges the values, and its 422s are shown beside the fields.
  const form = el("form", { "data-testid": "newjob-form", class: "card", novalidate: true, onsubmit: (e) => { e.preventDefault(); start(); } },
    el("div", { class: "grid" }, el("div", {}, Object.values(fields)), specField),
    general, el("div", { class: "row" }, submit, course));
  root.append(el("h1", {}, t("newjob.title")), el("p", { class: "muted" }, t("newjob.help")));
  if (!datasets.length) root.append(el("p", { class: "muted" }, t("newjob.noDatasets")));
  root.append(form);

  function targets() {
    const dataset = datasets.find((d) => d.id === inputs.dataset_id.value);
    const columns = dataset?.columns?.map((c) => c.name) || [];
    const previous = inputs.target.value;
    inputs.target.replaceChildren(el("option", { value: "" }, t("newjob.none")), ...columns.map((c) => el("option", { value: c, selected: c === previous }, c)));
    if (!columns.includes(previous) && columns.length) inputs.target.value = columns[columns.length - 1];
  }

  // The spec from the form. Edits made in the text stay: a changed field replaces only its
  // own part (model and optimizer as a whole, since their fields depend on kind and name).
  function build(changed = null) {
    const out = { dataset_id: inputs.dataset_id.value || null, task: inputs.task.value };
    if (inputs.target.value) out.target = inputs.target.value;
    out.model = { ...KINDS[inputs["model.kind"].value] };
    out.optimizer = { name: inputs["optimizer.name"].value };
    const lr = Number(inputs["optimizer.lr"].value);
    if (inputs["optimizer.lr"].value !== "" && !Number.isNaN(lr)) out.optimizer.lr = lr;
    out.training = { epochs: Number(inputs["training.epochs"].value), batch_size: Number(inputs["training.batch_size"].value) };
    let edited = null;
    try {
      edited = changed && JSON.parse(spec.value);
    } catch {
      edited = null; // not JSON (yet): start again from the form
    }
    if (edited && typeof edited === "object") {
      const top = changed.split(".")[0];
      if (top === "training") edited.training = { ...edited.training, ...out.training };
      else if (changed === "optimizer.lr") edited.optimizer = { ...edited.optimizer, lr: out.optimizer.lr };
      else if (changed === "target" && !out.target) delete edited.target;
      else edited[top] = out[top];
      if (changed === "dataset_id") edited.target = out.target;
    }
    spec.value = JSON.stringify(edited || out, null, 2);
  }

  for (const [name, input] of Object.entries(inputs)) {
    input.addEventListener("change", () => {
      if (input === inputs.dataset_id) targets();
      build(name);
    });
  }
  targets();
  build();

  function clearErrors() {
    for (const node of form.querySelectorAll("[data-testid=field-error]")) node.remove();
    general.replaceChildren();
  }

  function showErrors(err, sent) {
    const detail = err instanceof ApiError ? err.detail : err.message;
    const items = Array.isArray(detail) ? detail : [{ loc: null, msg: describe(detail) }];
    const unplaced = [];
    for (const item of items) {
      let path = item.loc ? fieldPath(item.loc, sent) : null;
      let msg = item.msg;
      const named = !path && typeof msg === "string" ? msg.match(/^([a-z_][\w.]*): (.+)$/s) : null;
      if (named) [, path, msg] = named;
      if (!path && typeof msg === "string") path = mentionedField(msg, Object.keys(fields));
      if (!path) {
        unplaced.push(msg);
        continue;
      }
      const host = fields[path] || specField; // a field the form has, else the spec itself
      host.append(el("p", { class: "field-error", "data-testid": "field-error", "data-field": path, role: "alert" }, host === specField ? `${path}: ${msg}` : msg));
    }
    if (unplaced.length || !items.length) general.replaceChildren(el("p", { class: "error", role: "alert" }, t("newjob.failed", { message: unplaced.join("; ") || describe(detail) })));
  }

  function parsed() {
    try {
      return JSON.parse(spec.value);
    } catch (err) {
      general.replaceChildren(el("p", { class: "error", role: "alert" }, t("newjob.badJson", { message: err.message })));
      return null;
    }
  }

  async function start() {
    clearErrors();
    const sent = parsed();
    if (!sent) return;
    submit.disabled = true;
    try {
      const job = await api.post("/jobs", sent, { signal });
      navigate(`#/jobs/${job.id}`);
    } catch (err) {
      if (signal.aborted) return;
      showErrors(err, sent);
    } finally {
      submit.disabled = false;
    }
  }

  // The course's comparison: the same spec once per optimizer (each with its default lr).
  async function startCourse() {
    clearErrors();
    const sent = parsed();
    if (!sent) return;
    course.disabled = true;
    try {
      const ids = [];
      for (const name of COURSE_OPTIMIZERS) ids.push((await api.post("/jobs", { ...sent, optimizer: { name } }, { signal })).id);
      navigate(`#/compare?ids=${ids.join(",")}`);
    } catch (err) {
      if (!signal.aborted) showErrors(err, sent);
    } finally {
      course.disabled = false;
    }
  }
}
