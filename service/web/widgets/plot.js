// Plotly (from the plotly wheel, served at /ui/vendor/plotly.min.js) with Keiko's look.

const PLOTLY_SRC = "/ui/vendor/plotly.min.js";
let loading = null;

// index.html loads Plotly with `async`; this waits for it (or loads it) when a page needs it.
export function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.querySelector(`script[src="${PLOTLY_SRC}"]`) || document.head.appendChild(Object.assign(document.createElement("script"), { src: PLOTLY_SRC }));
      script.addEventListener("load", () => resolve(window.Plotly));
      script.addEventListener("error", () => reject(new Error("plotly.min.js did not load")));
      if (window.Plotly) resolve(window.Plotly);
    });
  }
  return loading;
}

export const COLORS = ["#2f6fdf", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#29335c", "#db2763", "#6c8b2f", "#0b7a75", "#a0522d"];

export function baseLayout({ title = "", xTitle = "", yTitle = "", extra = {} } = {}) {
  return {
    title: title ? { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" } : undefined,
    margin: { l: 56, r: 16, t: title ? 36 : 12, b: 44 },
    xaxis: { title: { text: xTitle }, zeroline: false, gridcolor: "#eceff3" },
    yaxis: { title: { text: yTitle }, zeroline: false, gridcolor: "#eceff3" },
    legend: { orientation: "h", y: -0.22 },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    font: { family: "system-ui, sans-serif", size: 12 },
    hovermode: "x unified",
    uirevision: "keep", // zoom and hidden traces survive updates
    ...extra,
  };
}

export const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

// The x range a plotly_relayout event sets: [x0, x1], "reset" on autorange, or null.
export function rangeOf(event, axis = "xaxis") {
  if (event[`${axis}.autorange`]) return "reset";
  if (`${axis}.range[0]` in event) return [event[`${axis}.range[0]`], event[`${axis}.range[1]`]];
  if (Array.isArray(event[`${axis}.range`])) return event[`${axis}.range`];
  return null;
}
