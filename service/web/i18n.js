// Strings in English and Japanese. Each module registers its own with register();
// t(key, vars) looks one up in the current language ("{name}" placeholders filled from vars).
// The language comes from the browser (ja* -> ja), overridden by the header's switch.

const STORE_KEY = "keiko.lang";
export const LANGS = ["en", "ja"];
const strings = { en: {}, ja: {} };
const listeners = new Set();

function initialLang() {
  const saved = localStorage.getItem(STORE_KEY);
  if (LANGS.includes(saved)) return saved;
  const prefs = navigator.languages?.length ? navigator.languages : [navigator.language || "en"];
  for (const pref of prefs) {
    const base = String(pref).toLowerCase().split("-")[0];
    if (LANGS.includes(base)) return base;
  }
  return "en";
}

let lang = initialLang();

export function register(table) {
  for (const code of LANGS) Object.assign(strings[code], table[code] || {});
}

export function t(key, vars = {}) {
  const text = strings[lang][key] ?? strings.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

// A metric's name for people: "val_accuracy" -> "Validation accuracy" / "検証正解率".
export function metricLabel(name) {
  const known = (key) => key in strings[lang] || key in strings.en;
  if (known(`metric.${name}`)) return t(`metric.${name}`);
  const parts = String(name).match(/^(val|test|train)_(.+)$/);
  if (!parts) return known(`metricname.${name}`) ? t(`metricname.${name}`) : name;
  const split = { val: "term.validation", test: "term.test", train: "term.train" }[parts[1]];
  const metric = `metricname.${parts[2]}`;
  const metricText = known(metric) ? t(metric) : parts[2];
  return lang === "ja" ? `${t(split)}${metricText}` : `${t(split)} ${metricText}`;
}

export function getLang() {
  return lang;
}

export function setLang(code, { remember = true } = {}) {
  if (!LANGS.includes(code) || code === lang) return;
  lang = code;
  if (remember) localStorage.setItem(STORE_KEY, code);
  document.documentElement.lang = code;
  for (const fn of listeners) fn(code);
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// Strings shared by several pages: the course's terms in one place.
register({
  en: {
    "app.title": "Keiko",
    "app.tagline": "train, watch and try models",
    "nav.jobs": "Jobs",
    "nav.models": "Models",
    "nav.datasets": "Datasets",
    "nav.new": "New job",
    "nav.studies": "Studies",
    "lang.label": "Language",
    "auth.title": "API key",
    "auth.help": "This Keiko needs an API key. It is kept for this browser tab only.",
    "auth.key": "Key",
    "auth.submit": "Use key",
    "auth.wrong": "That key was not accepted (401). Check it and try again.",
    "auth.forget": "Forget key",
    "common.loading": "Loading…",
    "common.error": "Something went wrong: {message}",
    "common.notFound": "Not found: {what}",
    "common.none": "none",
    "common.offline": "The API cannot be reached: {message}",
    "common.back": "Back",
    "term.loss": "Loss",
    "term.train_loss": "Training loss",
    "term.val_loss": "Validation loss",
    "term.accuracy": "Accuracy",
    "term.epoch": "Epoch",
    "term.step": "Step",
    "term.lr": "Learning rate",
    "term.optimizer": "Optimizer",
    "term.confusion": "Confusion matrix",
    "term.return": "Return",
    "term.eval_return": "Evaluation return",
    "term.train_return": "Training return",
    "term.epsilon": "Epsilon (exploration)",
    "term.validation": "Validation",
    "term.train": "Training",
    "term.test": "Test",
    "term.prediction": "Prediction",
    "term.job": "Job",
    "term.dataset": "Dataset",
    "term.model": "Model",
    "term.kind": "Kind",
    "term.task": "Task",
    "term.status": "Status",
    "term.progress": "Progress",
    "term.created": "Created",
    "term.parameter": "Parameter",
    "status.queued": "queued",
    "status.running": "running",
    "status.succeeded": "succeeded",
    "status.failed": "failed",
    "status.cancelled": "cancelled",
    "status.pruned": "pruned",
    "metric.val_accuracy": "Validation accuracy",
    "metric.val_f1": "Validation F1",
    "metric.val_log_loss": "Validation log loss",
    "metric.val_mse": "Validation MSE",
    "metric.val_rmse": "Validation RMSE",
    "metric.val_mae": "Validation MAE",
    "metric.val_r2": "Validation R²",
    "metric.eval_return_mean": "Evaluation return",
    "metric.train_return_mean": "Training return",
    "metric.eval_length_mean": "Evaluation episode length",
    "metricname.accuracy": "accuracy",
    "metricname.f1": "F1",
    "metricname.log_loss": "log loss",
    "metricname.loss": "loss",
    "metricname.precision": "precision",
    "metricname.recall": "recall",
    "metricname.mse": "MSE",
    "metricname.rmse": "RMSE",
    "metricname.mae": "MAE",
    "metricname.r2": "R²",
    "metricname.return_mean": "mean return",
  },
  ja: {
    "app.title": "Keiko 稽古",
    "app.tagline": "モデルを訓練し、見て、試す",
    "nav.jobs": "ジョブ",
    "nav.models": "モデル",
    "nav.datasets": "データセット",
    "nav.new": "新しいジョブ",
    "nav.studies": "探索",
    "lang.label": "言語",
    "auth.title": "API キー",
    "auth.help": "この Keiko には API キーが必要です。キーはこのタブの間だけ保存されます。",
    "auth.key": "キー",
    "auth.submit": "キーを使う",
    "auth.wrong": "このキーは受け付けられませんでした (401)。確認してもう一度入力してください。",
    "auth.forget": "キーを消す",
    "common.loading": "読み込み中…",
    "common.error": "エラーが発生しました: {message}",
    "common.notFound": "見つかりません: {what}",
    "common.none": "なし",
    "common.offline": "API に接続できません: {message}",
    "common.back": "戻る",
    "term.loss": "損失",
    "term.train_loss": "訓練損失",
    "term.val_loss": "検証損失",
    "term.accuracy": "正解率",
    "term.epoch": "エポック",
    "term.step": "ステップ",
    "term.lr": "学習率",
    "term.optimizer": "最適化手法",
    "term.confusion": "混同行列",
    "term.return": "報酬",
    "term.eval_return": "評価時の報酬",
    "term.train_return": "訓練時の報酬",
    "term.epsilon": "ε (探索率)",
    "term.validation": "検証",
    "term.train": "訓練",
    "term.test": "テスト",
    "term.prediction": "予測",
    "term.job": "ジョブ",
    "term.dataset": "データセット",
    "term.model": "モデル",
    "term.kind": "種類",
    "term.task": "タスク",
    "term.status": "状態",
    "term.progress": "進捗",
    "term.created": "作成日時",
    "term.parameter": "パラメータ",
    "status.queued": "待機中",
    "status.running": "実行中",
    "status.succeeded": "成功",
    "status.failed": "失敗",
    "status.cancelled": "キャンセル済み",
    "status.pruned": "打ち切り",
    "metric.val_accuracy": "検証正解率",
    "metric.val_f1": "検証 F1",
    "metric.val_log_loss": "検証対数損失",
    "metric.val_mse": "検証 MSE",
    "metric.val_rmse": "検証 RMSE",
    "metric.val_mae": "検証 MAE",
    "metric.val_r2": "検証 R²",
    "metric.eval_return_mean": "評価時の報酬",
    "metric.train_return_mean": "訓練時の報酬",
    "metric.eval_length_mean": "評価エピソード長",
    "metricname.accuracy": "正解率",
    "metricname.f1": "F1",
    "metricname.log_loss": "対数損失",
    "metricname.loss": "損失",
    "metricname.precision": "適合率",
    "metricname.recall": "再現率",
    "metricname.mse": "MSE",
    "metricname.rmse": "RMSE",
    "metricname.mae": "MAE",
    "metricname.r2": "R²",
    "metricname.return_mean": "平均報酬",
  },
});
