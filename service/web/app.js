// The app shell: header (navigation, language switch), the API-key form, and a hash
// router that loads one module per page and calls its render(root, params, ctx).

import { api, getKey, onUnauthorized, setKey } from "./api.js";
import { getLang, LANGS, onLangChange, setLang, t } from "./i18n.js";
import { el, errorBox } from "./dom.js";

const ROUTES = [
  [/^#\/jobs\/([^/?]+)$/, "job", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/jobs\/?$/, "jobs", () => ({})],
  [/^#\/compare$/, "compare", (m, query) => ({ ids: (query.get("ids") || "").split(",").filter(Boolean) })],
  [/^#\/studies\/([^/?]+)$/, "study", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/studies\/?$/, "studies", () => ({})],
  [/^#\/models\/([^/?]+)$/, "model", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/models\/?$/, "models", () => ({})],
  [/^#\/datasets\/([^/?]+)$/, "dataset", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/datasets\/?$/, "datasets", () => ({})],
  [/^#\/new$/, "newjob", (m, query) => ({ dataset: query.get("dataset") })],
];
const NAV = [
  ["jobs", "#/jobs", "nav.jobs"],
  ["studies", "#/studies", "nav.studies"],
  ["models", "#/models", "nav.models"],
  ["datasets", "#/datasets", "nav.datasets"],
  ["new", "#/new", "nav.new"],
];

const root = document.getElementById("app");
const header = document.getElementById("header");
const authBox = document.getElementById("auth");
let cleanups = [];
let renderSeq = 0;

function match(hash) {
  const [path, search = ""] = (hash || "#/jobs").split("?");
  const query = new URLSearchParams(search);
  for (const [pattern, page, params] of ROUTES) {
    const m = path.match(pattern);
    if (m) return { page, params: params(m, query) };
  }
  return { page: "jobs", params: {} };
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function leavePage() {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

async function route() {
  leavePage();
  const seq = ++renderSeq;
  const { page, params } = match(location.hash);
  renderHeader(page);
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  const ctx = {
    api,
    t,
    navigate,
    signal: controller.signal,
    onCleanup: (fn) => cleanups.push(fn),
    isCurrent: () => seq === renderSeq,
  };
  root.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
  root.dataset.page = page;
  try {
    const module = await import(`./pages/${page}.js`);
    if (seq !== renderSeq) return;
    const view = el("div", { class: `page page-${page}` });
    root.replaceChildren(view);
    await module.render(view, params, ctx);
  } catch (err) {
    if (seq !== renderSeq || controller.signal.aborted) return;
    showError(err);
  }
}

function showError(err) {
  console.error(err);
  root.replaceChildren(errorBox(err));
}

function renderHeader(page) {
  const select = el(
    "select",
    { "data-testid": "lang-switch", "aria-label": t("lang.label"), onchange: (e) => setLang(e.target.value) },
    LANGS.map((code) => el("option", { value: code, selected: code === getLang() }, code === "ja" ? "日本語" : "English")),
  );
  const links = NAV.map(([name, href, key]) =>
    el("a", { href, "data-testid": `nav-${name}`, class: page.startsWith(name.replace("new", "newjob")) ? "active" : "" }, t(key)),
  );
  const forget = getKey()
    ? el("button", { type: "button", class: "link", "data-testid": "auth-forget", onclick: () => { setKey(null); route(); } }, t("auth.forget"))
    : null;
  header.replaceChildren(
    el("a", { href: "#/jobs", class: "brand" }, t("app.title")),
    el("nav", {}, links),
    el("span", { class: "spacer" }),
    forget,
    el("label", { class: "lang" }, select),
  );
}

// One key form at a time; resolves when the user submits a key.
let authWaiters = [];
function askForKey({ wrong }) {
  return new Promise((resolve) => {
    authWaiters.push(resolve);
    renderAuth(wrong);
  });
}

function renderAuth(wrong) {
  const input = el("input", {
    type: "password",
    autocomplete: "off",
    "data-testid": "auth-key",
    id: "auth-key",
    required: true,
    placeholder: t("auth.key"),
  });
  const form = el(
    "form",
    {
      "data-testid": "auth-form",
      class: "card auth-form",
      onsubmit: (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        setKey(key);
        authBox.hidden = true;
        authBox.replaceChildren();
        renderHeader(match(location.hash).page);
        for (const resolve of authWaiters.splice(0)) resolve();
      },
    },
    el("h2", {}, t("auth.title")),
    el("p", { class: "muted" }, t("auth.help")),
    wrong ? el("p", { class: "error", role: "alert", "data-testid": "auth-error" }, t("auth.wrong")) : null,
    el("label", { for: "auth-key" }, t("auth.key")),
    input,
    el("button", { type: "submit", "data-testid": "auth-submit" }, t("auth.submit")),
  );
  authBox.replaceChildren(form);
  authBox.hidden = false;
  authBox.dataset.wrong = wrong ? "true" : "false";
  input.focus();
}

onUnauthorized(askForKey);
onLangChange(() => {
  if (!authBox.hidden) renderAuth(authBox.dataset.wrong === "true");
  route();
});
window.addEventListener("hashchange", route);
document.documentElement.lang = getLang();
route();
