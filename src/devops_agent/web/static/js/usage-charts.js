// The customer's usage analytics on the billing page: credits per day and per tool
// over the billing period (plan feature usage_analytics), the CSV export
// (advanced_analytics), the monthly statement (compliance_reports) and the
// low-credit email switch. A plan without a feature is told which plans have it.
import { api, errorMessage, shortDate } from "./common.js";
import { baseOptions, dayLabel, draw, fillRows } from "./charts.js";

const $ = (selector) => document.querySelector(selector);

function gatedMessage(result, what) {
  if (result.status === 403 && result.data && result.data.error === "feature_not_in_plan") {
    const plans = (result.data.tiers || []).map((t) => t[0].toUpperCase() + t.slice(1)).join(", ");
    return `${what} come${what.endsWith("s") ? "" : "s"} with ${plans || "a bigger plan"}.`;
  }
  return errorMessage(result);
}

async function loadCharts() {
  const result = await api("GET", "/api/analytics/usage");
  if (!result.ok) {
    const gate = $("[data-analytics-gated]");
    gate.textContent = gatedMessage(result, "Usage charts");
    gate.hidden = false;
    return;
  }
  const data = result.data;
  const last = new Date(new Date(data.end).getTime() - 1);
  $("[data-analytics-window]").textContent =
    `${shortDate(data.start)} – ${shortDate(last.toISOString())}: ${data.total_credits} credits`;
  $("[data-analytics-charts]").hidden = false;
  fillRows($("[data-customer-daily-rows]"), data.per_day.map((d) => [d.day, d.credits]), [1]);
  draw($("[data-customer-daily-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: data.per_day.map((d) => dayLabel(d.day)),
      datasets: [{ label: "Credits", data: data.per_day.map((d) => d.credits), backgroundColor: c.series[0] }],
    },
    options: baseOptions(c),
  }));
  fillRows($("[data-customer-tool-rows]"), data.by_tool.map((t) => [t.tool, t.count, t.credits_used]), [1, 2]);
  draw($("[data-customer-tools-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: data.by_tool.map((t) => t.tool),
      datasets: [
        {
          label: "Credits",
          data: data.by_tool.map((t) => t.credits_used),
          backgroundColor: data.by_tool.map((_, i) => c.series[i % c.series.length]),
        },
      ],
    },
    options: baseOptions(c, { horizontal: true }),
  }));
}

async function loadExports() {
  const notes = [];
  const today = new Date().toISOString().slice(0, 10);
  const csv = await api("GET", `/api/analytics/usage.csv?start=${today}&end=${today}`);
  if (csv.ok) $("[data-export-csv]").hidden = false;
  else notes.push(gatedMessage(csv, "The usage export"));
  const month = today.slice(0, 7);
  const statement = await api("GET", `/api/analytics/statement?month=${month}`);
  if (statement.ok) {
    const form = $("[data-statement-form]");
    form.hidden = false;
    form.elements.month.value = month;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      window.location.assign(`/api/analytics/statement.csv?month=${encodeURIComponent(form.elements.month.value)}`);
    });
  } else {
    notes.push(gatedMessage(statement, "Monthly statements"));
  }
  $("[data-exports-note]").textContent = notes.join(" ");
}

async function loadPreferences() {
  const box = $("[data-low-credit-emails]");
  const result = await api("GET", "/api/account/email-preferences");
  if (!result.ok) return;
  box.checked = result.data.low_credit_emails;
  box.addEventListener("change", async () => {
    box.disabled = true;
    const saved = await api("PUT", "/api/account/email-preferences", { low_credit_emails: box.checked });
    box.disabled = false;
    if (!saved.ok) box.checked = !box.checked;
  });
}

await Promise.all([loadCharts(), loadExports(), loadPreferences()]);
document.querySelector("[data-analytics]").dataset.ready = "true";
