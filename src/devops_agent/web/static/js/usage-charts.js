// The customer's usage analytics on the billing page: credits per day and per tool
// over the billing period (plan feature usage_analytics), the CSV export
// (advanced_analytics), the monthly statement (compliance_reports) and the
// low-credit email switch. A plan without a feature is told which plans have it,
// from the plans' features the page carries: no request is made that would answer 403.
// An upgrade on the page ("subscription:changed") shows what it brought at once.
import { actionLabel, api, errorMessage, loadSubscription, plural, shortDate } from "./common.js";
import { baseOptions, dayLabel, draw, fillRows } from "./charts.js";

const $ = (selector) => document.querySelector(selector);
const section = $("[data-analytics]");
// [{name: "starter", display: "Starter", features: ["usage_analytics", ...]}], in the catalog's order.
const plans = JSON.parse(section.dataset.plans || "[]");

function has(sub, feature) {
  const plan = plans.find((p) => p.name === sub.tier.name);
  return Boolean(plan && plan.features.includes(feature));
}

function gatedMessage(feature, what) {
  const names = plans
    .filter((plan) => plan.features.includes(feature))
    .map((plan) => plan.display);
  const list = names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}` : names[0];
  return `${what} come${what.endsWith("s") ? "" : "s"} with ${list || "a bigger plan"}.`;
}

async function loadCharts(sub) {
  const gate = $("[data-analytics-gated]");
  if (!has(sub, "usage_analytics")) {
    gate.textContent = gatedMessage("usage_analytics", "Usage charts");
    gate.hidden = false;
    $("[data-analytics-charts]").hidden = true;
    return;
  }
  gate.hidden = true;
  const result = await api("GET", "/api/analytics/usage");
  if (!result.ok) {
    gate.textContent = errorMessage(result);
    gate.hidden = false;
    return;
  }
  const data = result.data;
  const last = new Date(new Date(data.end).getTime() - 1);
  $("[data-analytics-window]").textContent =
    `${shortDate(data.start)} – ${shortDate(last.toISOString())}: ${plural(data.total_credits, "credit")}`;
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
  fillRows($("[data-customer-tool-rows]"), data.by_tool.map((t) => [actionLabel(t.tool), t.count, t.credits_used]), [1, 2]);
  draw($("[data-customer-tools-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: data.by_tool.map((t) => actionLabel(t.tool)),
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

function loadExports(sub) {
  const notes = [];
  const csv = has(sub, "advanced_analytics");
  $("[data-export-csv]").hidden = !csv;
  if (!csv) notes.push(gatedMessage("advanced_analytics", "The usage export"));
  const form = $("[data-statement-form]");
  const statements = has(sub, "compliance_reports");
  form.hidden = !statements;
  if (statements && !form.elements.month.value) form.elements.month.value = new Date().toISOString().slice(0, 7);
  if (!statements) notes.push(gatedMessage("compliance_reports", "Monthly statements"));
  $("[data-exports-note]").textContent = notes.join(" ");
}

$("[data-statement-form]").addEventListener("submit", (event) => {
  event.preventDefault();
  const month = event.target.elements.month.value;
  window.location.assign(`/api/analytics/statement.csv?month=${encodeURIComponent(month)}`);
});

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

async function show(sub) {
  loadExports(sub);
  await loadCharts(sub);
}

const first = await loadSubscription();
if (first.ok) await Promise.all([show(first.data.subscription), loadPreferences()]);
else await loadPreferences();
section.dataset.ready = "true";
document.addEventListener("subscription:changed", (event) => show(event.detail.subscription));
