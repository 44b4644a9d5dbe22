// One model: its input schema and metrics, and "try it": a form for table models, a drawing
// pad for 28x28 grey-image classifiers, an image upload for other image models, the grid
// world with a rollout's path for GridWorld policies, the returns of a rollout for other
// policies, and a JSON box for anything else.

import { el, errorText, fmt, fmtTime, table } from "../dom.js";
import { register, t } from "../i18n.js";
import { digitPad, toInput } from "../widgets/digit.js";
import { gridLayout, gridWorld, returnsChart } from "../widgets/grid.js";
import { mainMetric } from "./models.js";

register({
  en: {
    "model.title": "Model {id}",
    "model.fromJob": "trained by job",
    "model.schema": "Input schema",
    "model.output": "Output",
    "model.labels": "Labels",
    "model.target": "Target",
    "model.actions": "Actions",
    "model.feature": "Feature",
    "model.type": "Type",
    "model.values": "Values",
    "model.metrics": "Metrics",
    "model.metric": "Metric",
    "model.noMetrics": "No metrics recorded.",
    "model.try": "Try it",
    "model.predict": "Predict",
    "model.predicted": "Prediction: {label}",
    "model.probabilities": "Probabilities",
    "model.missing": "(missing)",
    "model.upload": "Or upload a {width}×{height} PNG or JPEG image:",
    "model.uploadOnly": "Upload a {width}×{height} PNG or JPEG image:",
    "model.range": "Pixels are sent as 0..{full}, like the training images.",
    "model.json": "Inputs as JSON (a list, one item per example):",
    "model.rollout": "Play an episode",
    "model.rolloutMany": "Play 10 episodes",
    "model.seed": "Seed",
    "model.returns": "Returns: {returns}",
    "model.shape": "Shape",
    "model.layout": "Layout",
    "model.dtype": "Pixel type",
    "model.observation": "Observation",
    "model.evaluation": "Evaluation",
  },
  ja: {
    "model.title": "モデル {id}",
    "model.fromJob": "訓練したジョブ",
    "model.schema": "入力の形式",
    "model.output": "出力",
    "model.labels": "ラベル",
    "model.target": "目的変数",
    "model.actions": "行動",
    "model.feature": "特徴量",
    "model.type": "型",
    "model.values": "値",
    "model.metrics": "評価指標",
    "model.metric": "指標",
    "model.noMetrics": "評価指標は記録されていません。",
    "model.try": "試してみる",
    "model.predict": "予測する",
    "model.predicted": "予測: {label}",
    "model.probabilities": "確率",
    "model.missing": "(欠損)",
    "model.upload": "または {width}×{height} の PNG / JPEG 画像をアップロード:",
    "model.uploadOnly": "{width}×{height} の PNG / JPEG 画像をアップロード:",
    "model.range": "画素値は訓練画像と同じ 0..{full} の範囲で送ります。",
    "model.json": "入力を JSON で (1 例につき 1 要素のリスト):",
    "model.rollout": "エピソードを 1 回実行",
    "model.rolloutMany": "エピソードを 10 回実行",
    "model.seed": "シード",
    "model.returns": "報酬: {returns}",
    "model.shape": "形状",
    "model.layout": "並び",
    "model.dtype": "画素の型",
    "model.observation": "観測",
    "model.evaluation": "評価",
  },
});

const enc = encodeURIComponent;

// This page's styles, loaded once beside the app's style.css.
function loadStyles() {
  if (document.querySelector('link[data-style="model"]')) return;
  document.head.append(el("link", { rel: "stylesheet", href: "/ui/pages/model.css", "data-style": "model" }));
}

export async function render(root, { id }, ctx) {
  const { api, signal } = ctx;
  loadStyles();
  const model = await api.get(`/models/${enc(id)}`, { signal });
  const job = model.job_id
    ? await api.get(`/jobs/${enc(model.job_id)}?history=none&checkpoints=none`, { signal }).catch(() => null)
    : null;
  const metric = mainMetric(model);
  const facts = [
    `${t("term.kind")}: ${model.kind}`,
    `${t("term.task")}: ${model.task}`,
    model.job_id ? el("span", {}, `${t("model.fromJob")} `, el("a", { href: `#/jobs/${enc(model.job_id)}`, class: "mono" }, model.job_id.slice(0, 12))) : null,
    metric ? `${t(metric.key)}: ${fmt(metric.value)}` : null,
    fmtTime(model.created_at),
  ].filter(Boolean);
  root.append(
    el("h1", {}, t("model.title", { id: model.id })),
    el("p", { class: "muted" }, facts.flatMap((fact, i) => (i ? [" · ", fact] : [fact]))),
  );
  const tryIt = el("section", { class: "card try-it" }, el("h2", {}, t("model.try")));
  root.append(tryIt, schemaSection(model), metricsSection(model.metrics));
  await renderTry(tryIt, model, job, ctx);
}

// Schema and metrics ---------------------------------------------------------------------

function schemaSection(model) {
  const s = model.input_schema || {};
  const parts = [];
  if (Array.isArray(s.features)) {
    parts.push(table(
      [t("model.feature"), t("model.type"), t("model.values")],
      s.features.map((f) => [el("span", { class: "mono" }, f.name), f.type, f.categories ? f.categories.join(", ") : "–"]),
    ));
  } else if (s.observation) {
    parts.push(el("dl", { class: "kv" }, el("dt", {}, t("model.observation")), el("dd", { class: "mono" }, JSON.stringify(s.observation))));
  } else {
    const rows = [];
    if (s.shape) rows.push([t("model.shape"), JSON.stringify(s.shape)]);
    if (s.layout) rows.push([t("model.layout"), s.layout]);
    if (s.dtype) rows.push([t("model.dtype"), s.dtype]);
    for (const key of ["window", "horizon", "columns", "time_column"]) if (s[key] !== undefined && s[key] !== null) rows.push([key, JSON.stringify(s[key])]);
    parts.push(el("dl", { class: "kv" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v)])));
  }
  const out = model.output || {};
  const outputs = [];
  if (out.labels) outputs.push([t("model.labels"), out.labels.map(String).join(", ")]);
  if (out.target) outputs.push([t("model.target"), String(out.target)]);
  if (out.action_names) outputs.push([t("model.actions"), out.action_names.join(", ")]);
  else if (out.num_actions) outputs.push([t("model.actions"), String(out.num_actions)]);
  return el(
    "section",
    { "data-testid": "model-schema" },
    el("h2", {}, t("model.schema")),
    parts,
    outputs.length ? el("dl", { class: "kv" }, el("dt", {}, t("model.output")), el("dd", {}), outputs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v)])) : null,
  );
}

register({
  en: {
    "mname.accuracy": "accuracy", "mname.loss": "loss", "mname.log_loss": "log loss", "mname.precision": "precision",
    "mname.recall": "recall", "mname.f1": "F1", "mname.mse": "MSE", "mname.rmse": "RMSE", "mname.mae": "MAE",
    "mname.r2": "R²", "mname.return_mean": "mean return", "mname.return_std": "return std", "mname.length_mean": "mean episode length",
    "mname.episodes": "episodes", "mname.steps": "steps", "mname.best_eval_return": "best evaluation return",
  },
  ja: {
    "mname.accuracy": "正解率", "mname.loss": "損失", "mname.log_loss": "対数損失", "mname.precision": "適合率",
    "mname.recall": "再現率", "mname.f1": "F1 値", "mname.mse": "平均二乗誤差 (MSE)", "mname.rmse": "RMSE", "mname.mae": "平均絶対誤差 (MAE)",
    "mname.r2": "決定係数 R²", "mname.return_mean": "平均報酬", "mname.return_std": "報酬の標準偏差", "mname.length_mean": "平均エピソード長",
    "mname.episodes": "エピソード数", "mname.steps": "ステップ数", "mname.best_eval_return": "最良の評価報酬",
  },
});

// A metric's name in the page's language, or as the API spells it when it has none.
function metricName(name) {
  const key = `mname.${name}`;
  const text = t(key);
  return text === key ? name : text;
}

const SPLIT_KEYS = { test: "term.test", validation: "term.validation", train: "term.train", evaluation: "model.evaluation" };

function metricsSection(metrics) {
  const splits = Object.keys(metrics || {}).filter((k) => metrics[k] && typeof metrics[k] === "object");
  const names = [];
  for (const split of splits) {
    for (const [name, value] of Object.entries(metrics[split])) {
      if ((typeof value === "number" || value === null) && !names.includes(name)) names.push(name);
    }
  }
  const body = names.length
    ? table(
        [t("model.metric"), ...splits.map((s) => (SPLIT_KEYS[s] ? t(SPLIT_KEYS[s]) : s))],
        names.map((name) => [el("span", { title: name }, metricName(name)), ...splits.map((s) => el("span", { class: "mono" }, fmt(metrics[s][name])))]),
      )
    : el("p", { class: "muted" }, t("model.noMetrics"));
  return el("section", { "data-testid": "model-metrics" }, el("h2", {}, t("model.metrics")), body);
}

// Try it -------------------------------------------------------------------------------------

function isDigitModel(model) {
  const s = model.input_schema || {};
  const shape = JSON.stringify(s.shape || []);
  const grey28 = ["[28,28]", "[28,28,1]", "[1,28,28]"].includes(shape);
  return model.task === "classification" && grey28 && (s.channels === undefined || s.channels === 1);
}

async function renderTry(section, model, job, ctx) {
  const s = model.input_schema || {};
  const result = el("div", { class: "prediction-box" });
  const show = (promise) => showResult(result, promise);
  if (model.task === "reinforcement") {
    section.append(await policyTry(model, job, ctx));
    return;
  }
  if (Array.isArray(s.features)) {
    section.append(await tableForm(model, job, ctx, show), result);
    return;
  }
  if (isDigitModel(model)) {
    const full = await pixelRange(s, job, ctx);
    const pad = digitPad({
      onPredict: (field) => show(ctx.api.post("/predict", { model_id: model.id, inputs: [toInput(field, s.shape, full)] })),
    });
    section.append(el("div", { class: "grid try-grid" }, el("div", {}, pad.node, el("p", { class: "hint" }, t("model.range", { full }))), result));
    if (s.image_files) section.append(uploadForm(model, ctx, show, "model.upload"));
    return;
  }
  if (s.image_files) {
    section.append(uploadForm(model, ctx, show, "model.uploadOnly"), result);
    return;
  }
  section.append(jsonForm(model, ctx, show), result);
}

// The value of white: 255 for 8-bit training images, 1 for float ones. Image schemas say
// it (dtype); array models are looked up through their job's dataset.
async function pixelRange(schema, job, { api, signal }) {
  if (schema.dtype) return schema.dtype === "uint8" ? 255 : 1;
  const datasetId = job?.spec?.dataset_id;
  if (!datasetId) return 255;
  const dataset = await api.get(`/datasets/${enc(datasetId)}`, { signal }).catch(() => null);
  const dtype = String(dataset?.shape?.x_dtype || "uint8");
  return /^u?int/.test(dtype) ? 255 : 1;
}

function showResult(box, promise) {
  box.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
  promise.then(
    (answer) => box.replaceChildren(predictionView(answer, 0)),
    (err) => box.replaceChildren(el("p", { class: "error", role: "alert", "data-testid": "predict-error" }, errorText(err))),
  );
}

export function predictionView(answer, index) {
  const label = answer.predictions[index];
  const shown = typeof label === "number" ? fmt(label) : String(label);
  const head = el("p", { class: "prediction", "data-testid": "prediction", "data-label": String(label) }, t("model.predicted", { label: shown }));
  const probs = answer.probabilities?.[index];
  if (!probs || !answer.labels) return head;
  const best = probs.indexOf(Math.max(...probs));
  const bars = answer.labels.map((name, i) =>
    el(
      "div",
      { class: `bar-row${i === best ? " best" : ""}`, "data-label": String(name), "data-p": String(probs[i]) },
      el("span", { class: "bar-label mono" }, String(name)),
      el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width: ${(100 * probs[i]).toFixed(2)}%` })),
      el("span", { class: "bar-value mono" }, fmt(probs[i], 3)),
    ),
  );
  return el("div", {}, head, el("div", { class: "bars", "data-testid": "probabilities", "aria-label": t("model.probabilities") }, el("h3", {}, t("model.probabilities")), bars));
}

async function tableForm(model, job, { api, signal }, show) {
  const features = model.input_schema.features;
  // The first row of the training dataset fills the form, when it is still there.
  let first = null;
  const datasetId = job?.spec?.dataset_id;
  if (datasetId) {
    const sample = await api.get(`/datasets/${enc(datasetId)}/samples?n=1`, { signal }).catch(() => null);
    if (sample?.kind === "table" && sample.rows.length) first = Object.fromEntries(sample.columns.map((c, i) => [c, sample.rows[0][i]]));
  }
  const fields = features.map((f) => {
    const initial = first?.[f.name];
    const control = f.categories
      ? el("select", { name: f.name, "data-feature": f.name },
          f.categories.map((c) => el("option", { value: c, selected: String(initial) === c }, c)),
          el("option", { value: "" }, t("model.missing")))
      : el("input", { type: "number", step: "any", name: f.name, "data-feature": f.name, value: typeof initial === "number" ? String(initial) : "0", required: true });
    return el("label", { class: "field" }, el("span", { class: "mono" }, f.name), control);
  });
  const form = el(
    "form",
    {
      "data-testid": "try-form",
      class: "try-form",
      onsubmit: (event) => {
        event.preventDefault();
        const record = {};
        for (const f of features) {
          const value = form.elements[f.name].value;
          record[f.name] = f.categories ? (value === "" ? null : value) : Number(value);
        }
        show(api.post("/predict", { model_id: model.id, inputs: [record] }));
      },
    },
    el("div", { class: "form-grid" }, fields),
    el("button", { type: "submit", class: "primary", "data-testid": "try-submit" }, t("model.predict")),
  );
  return form;
}

function uploadForm(model, { api }, show, key) {
  const s = model.input_schema;
  const input = el("input", {
    type: "file",
    accept: "image/png,image/jpeg",
    "data-testid": "image-upload",
    onchange: () => {
      const file = input.files?.[0];
      if (!file) return;
      const form = new FormData();
      form.append("model_id", model.id);
      form.append("file", file, file.name);
      show(api.postForm("/predict/files", form));
    },
  });
  return el("label", { class: "field upload" }, el("span", {}, t(key, { width: s.width ?? s.shape?.[1] ?? "?", height: s.height ?? s.shape?.[0] ?? "?" })), input);
}

function jsonForm(model, { api }, show) {
  const shape = model.input_schema?.shape;
  const zeros = (dims) => (dims.length ? Array.from({ length: dims[0] }, () => zeros(dims.slice(1))) : 0);
  const box = el("textarea", { class: "json-input", "data-testid": "try-json", spellcheck: "false" }, JSON.stringify([shape ? zeros(shape) : {}]));
  box.style.minHeight = "6rem";
  return el(
    "form",
    {
      class: "try-form",
      onsubmit: (event) => {
        event.preventDefault();
        let inputs;
        try {
          inputs = JSON.parse(box.value);
        } catch (err) {
          show(Promise.reject(err));
          return;
        }
        show(api.post("/predict", { model_id: model.id, inputs }));
      },
    },
    el("label", { class: "field" }, el("span", {}, t("model.json")), box),
    el("button", { type: "submit", class: "primary" }, t("model.predict")),
  );
}

// Policies -----------------------------------------------------------------------------------

async function policyTry(model, job, { api }) {
  const env = job?.spec?.model?.env ?? (model.output?.action_names ? "GridWorld" : null);
  const isGrid = env === "GridWorld";
  const layout = isGrid ? gridLayout(job?.spec?.model?.env_options) : null;
  const seed = el("input", { type: "number", min: 0, step: 1, value: "0", "aria-label": t("model.seed"), class: "seed" });
  const view = el("div", { class: "rollout-view" });
  const play = async (episodes) => {
    view.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const played = await api.post(`/models/${enc(model.id)}/rollout`, { episodes, seed: Number(seed.value) || 0 });
      const returns = el("p", { class: "hint", "data-testid": "rollout-summary" }, t("model.returns", { returns: played.returns.map((r) => fmt(r)).join(", ") }));
      if (isGrid && played.paths?.length) {
        const path = played.paths[0];
        const parts = [
          gridWorld(layout, path),
          el("p", { class: "hint" }, t("grid.path", { steps: played.lengths[0], ret: fmt(played.returns[0]) })),
          episodes > 1 ? returnsChart(played.returns) : null,
          returns,
        ];
        view.replaceChildren(...parts.filter(Boolean));
      } else {
        view.replaceChildren(returnsChart(played.returns), returns);
      }
    } catch (err) {
      view.replaceChildren(el("p", { class: "error", role: "alert" }, errorText(err)));
    }
  };
  const controls = el(
    "div",
    { class: "row" },
    el("label", {}, `${t("model.seed")} `, seed),
    el("button", { type: "button", class: "primary", "data-testid": "rollout-run", onclick: () => play(isGrid ? 1 : 10) }, t(isGrid ? "model.rollout" : "model.rolloutMany")),
    isGrid ? el("button", { type: "button", onclick: () => play(10) }, t("model.rolloutMany")) : null,
  );
  await play(isGrid ? 1 : 10);
  return el("div", {}, controls, view);
}

