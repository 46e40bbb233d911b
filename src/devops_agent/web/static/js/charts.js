// Charts for the admin dashboard and the customer's usage analytics, drawn with the
// vendored Chart.js (static/vendor/chartjs, loaded as a classic script before this
// module). Colours come from the page's CSS variables, so a chart follows the light
// or dark theme, and every chart is redrawn when the reader's colour scheme changes.
// Each chart sits next to a data table (in <details>): the numbers stay readable by
// screen readers, by search, and when a canvas is too small on a phone.
import { el } from "./common.js";

const drawn = new Map(); // canvas -> function(palette) returning a Chart.js config

/** The theme's colours, read from app.css's custom properties. */
export function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    text: v("--text"),
    muted: v("--muted"),
    grid: v("--border"),
    surface: v("--surface"),
    font: v("--font"),
    series: [v("--primary"), v("--accent"), v("--focus"), v("--error-text"), v("--muted")],
    error: v("--error-text"),
  };
}

/** Axis and legend options that read well in both themes and on a narrow screen. */
export function baseOptions(colors, { horizontal = false, legend = false, stacked = false } = {}) {
  const axis = (beginAtZero) => ({
    beginAtZero,
    stacked,
    ticks: { color: colors.muted, precision: 0, maxRotation: 0, autoSkip: true, autoSkipPadding: 12 },
    grid: { color: colors.grid },
    border: { color: colors.grid },
  });
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    indexAxis: horizontal ? "y" : "x",
    plugins: {
      legend: { display: legend, labels: { color: colors.text, boxWidth: 12 } },
      tooltip: { intersect: false, mode: "index" },
    },
    scales: { x: axis(true), y: axis(true) },
  };
}

/** Draw (or redraw) a chart on ``canvas``; ``build(palette)`` returns the Chart.js config. */
export function draw(canvas, build) {
  if (!window.Chart) {
    canvas.replaceWith(el("p", { class: "muted small", text: "Charts could not load; the table below has the numbers." }));
    return null;
  }
  const colors = palette();
  window.Chart.defaults.font.family = colors.font;
  window.Chart.defaults.color = colors.text;
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
  drawn.set(canvas, build);
  const chart = new window.Chart(canvas, build(colors));
  const box = canvas.closest("[data-chart]");
  if (box) box.dataset.ready = "true";
  return chart;
}

/** Fill a table body with rows of cell texts; numbers are right-aligned. */
export function fillRows(tbody, rows, numeric = []) {
  tbody.replaceChildren(
    ...rows.map((cells) =>
      el("tr", {}, ...cells.map((text, i) => el("td", { class: numeric.includes(i) ? "num" : undefined, text: String(text) }))),
    ),
  );
}

/** A day "2026-01-16" as "16 Jan" (UTC, as the API buckets days). */
export function dayLabel(day) {
  return new Date(`${day}T00:00:00Z`).toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
}

/** USD with cents and thousands separators: 14100 -> "$14,100.00". */
export function money(amount) {
  return Number(amount).toLocaleString("en-US", { style: "currency", currency: "USD" });
}

const scheme = window.matchMedia("(prefers-color-scheme: dark)");
scheme.addEventListener("change", () => {
  for (const [canvas, build] of drawn) {
    if (canvas.isConnected) draw(canvas, build);
    else drawn.delete(canvas);
  }
});
