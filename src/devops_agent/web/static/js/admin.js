// The admin dashboard: revenue, its recognition by month, usage, the projection
// calculator, user lookup with adjustments, promotional grants and suspensions, the email
// outbox and the audit log, all from /api/admin/*. Charts are drawn by charts.js; each has
// its numbers in a table too.
import {
  api,
  clearErrors,
  dateTime,
  el,
  errorMessage,
  expiryDate,
  formValues,
  grantWord,
  plural,
  showErrors,
  submitGrant,
} from "./common.js";
import { baseOptions, dayLabel, draw, fillRows, money } from "./charts.js";

const $ = (selector) => document.querySelector(selector);
const status = $("[data-admin-status]");
let tiers = []; // [{name, display_name, monthly_price}] cheapest first
let currentUser = null; // the user whose detail is open

function say(message, kind = "ok") {
  status.className = `alert alert-${kind}`;
  status.textContent = message;
}

const displayName = (name) => (tiers.find((t) => t.name === name) || { display_name: name }).display_name;
const percent = (rate) => `${(100 * rate).toFixed(1)}%`;

// --- revenue ------------------------------------------------------------------------

async function loadRevenue() {
  const months = $("#revenue-months").value;
  const result = await api("GET", `/api/admin/revenue?months=${months}`);
  if (!result.ok) return say(errorMessage(result), "error");
  const data = result.data;
  const paid = tiers.filter((t) => Number(t.monthly_price) > 0).map((t) => t.name);
  const paidCount = Object.entries(data.subscribers_by_tier)
    .filter(([name]) => paid.includes(name))
    .reduce((sum, [, n]) => sum + n, 0);
  $("[data-kpi-mrr]").firstChild.textContent = money(data.mrr);
  $("[data-kpi-packs]").firstChild.textContent = money(data.pack_revenue);
  $("[data-kpi-paid]").firstChild.textContent = String(paidCount);
  $("[data-kpi-churn]").firstChild.textContent =
    `${percent(data.churn.rate)} (${data.churn.churned} of ${data.churn.paid_at_start})`;

  const byMonth = data.pack_revenue_by_month;
  fillRows(
    $("[data-pack-rows]"),
    byMonth.map((m) => [m.month, money(m.gross), money(m.refunds), money(m.net)]),
    [1, 2, 3],
  );
  draw($("[data-pack-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: byMonth.map((m) => m.month),
      datasets: [
        { label: "Net revenue (USD)", data: byMonth.map((m) => m.net), backgroundColor: c.series[1] },
        { label: "Refunds (USD)", data: byMonth.map((m) => -m.refunds), backgroundColor: c.series[3] },
      ],
    },
    options: baseOptions(c, { legend: true, stacked: true }),
  }));

  const tierNames = Object.keys(data.subscribers_by_tier);
  fillRows(
    $("[data-tier-rows]"),
    tierNames.map((name) => {
      const tier = tiers.find((t) => t.name === name);
      return [displayName(name), data.subscribers_by_tier[name], tier ? money(tier.monthly_price) : "—"];
    }),
    [1, 2],
  );
  draw($("[data-tier-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: tierNames.map(displayName),
      datasets: [
        {
          label: "Accounts",
          data: tierNames.map((n) => data.subscribers_by_tier[n]),
          backgroundColor: tierNames.map((_, i) => c.series[i % c.series.length]),
        },
      ],
    },
    options: baseOptions(c),
  }));
}

// --- revenue recognition ------------------------------------------------------------

// "2026-03" moved by whole months.
function addMonths(month, n) {
  const [year, number] = month.split("-").map(Number);
  const index = year * 12 + number - 1 + n;
  return `${Math.floor(index / 12)}-${String((index % 12) + 1).padStart(2, "0")}`;
}

async function loadRecognition() {
  const input = $("#recognition-month");
  const query = input.value ? `?month=${encodeURIComponent(input.value)}` : ""; // none: the current month
  const result = await api("GET", `/api/admin/revenue/recognition${query}`);
  if (!result.ok) return say(errorMessage(result), "error");
  const data = result.data;
  input.value = data.month;
  for (const cell of document.querySelectorAll("[data-recognition] [data-figure]")) {
    const amount = data[cell.dataset.figure];
    if (cell.firstChild && cell.firstChild.nodeType === Node.TEXT_NODE) cell.firstChild.textContent = money(amount);
    else cell.prepend(money(amount));
  }
  $("[data-recognition-label]").textContent = `(${data.month})`;
  const first = addMonths(data.month, -11) < "2000-01" ? "2000-01" : addMonths(data.month, -11);
  const csv = $("[data-recognition-csv]");
  csv.href = `/api/admin/revenue/recognition.csv?from=${first}&to=${data.month}`;
  csv.textContent = `CSV, ${first} to ${data.month}`;
  $("[data-recognition]").dataset.ready = "true";
}

// --- usage --------------------------------------------------------------------------

async function loadUsage() {
  const days = $("#usage-days").value;
  const [daily, users, tools] = await Promise.all([
    api("GET", `/api/admin/usage/daily?days=${days}`),
    api("GET", `/api/admin/usage/top-users?days=${days}`),
    api("GET", `/api/admin/usage/top-tools?days=${days}`),
  ]);
  for (const result of [daily, users, tools]) if (!result.ok) return say(errorMessage(result), "error");

  const perDay = daily.data.days;
  $("[data-daily-total]").textContent = `(${daily.data.total} in ${perDay.length} days)`;
  fillRows($("[data-daily-rows]"), perDay.filter((d) => d.credits).map((d) => [d.day, d.credits]), [1]);
  draw($("[data-daily-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: perDay.map((d) => dayLabel(d.day)),
      datasets: [{ label: "Credits", data: perDay.map((d) => d.credits), backgroundColor: c.series[0] }],
    },
    options: baseOptions(c),
  }));

  fillRows($("[data-top-user-rows]"), users.data.map((u) => [u.name, u.credits_used]), [1]);
  fillRows(
    $("[data-top-tool-rows]"),
    tools.data.map((t) => [t.name, t.count, t.credits_used, percent(t.failure_rate)]),
    [1, 2, 3],
  );
  draw($("[data-tools-chart]"), (c) => ({
    type: "bar",
    data: {
      labels: tools.data.map((t) => t.name),
      datasets: [
        { label: "Succeeded", data: tools.data.map((t) => t.count - t.failures), backgroundColor: c.series[1] },
        { label: "Failed", data: tools.data.map((t) => t.failures), backgroundColor: c.series[3] },
      ],
    },
    options: baseOptions(c, { horizontal: true, legend: true, stacked: true }),
  }));
}

// --- projection ---------------------------------------------------------------------

const PRESETS = {
  conservative: { users: 100, starter: 15, professional: 4, business: 1 },
  growth: { users: 1000, starter: 200, professional: 80, business: 20 },
};

function buildProjectionInputs() {
  const box = $("[data-tier-inputs]");
  for (const tier of tiers) {
    const id = `projection-${tier.name}`;
    box.append(
      el(
        "div",
        { class: "field" },
        el("label", { for: id, text: `${tier.display_name} (${money(tier.monthly_price)})` }),
        el("input", { id, name: `tier:${tier.name}`, type: "number", min: "0", step: "1", inputmode: "numeric" }),
        el("span", { class: "field-error", id: `${id}-error` }),
      ),
    );
  }
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => {
      const preset = PRESETS[button.dataset.preset];
      $("#projection-users").value = preset.users;
      for (const tier of tiers) {
        const input = $(`#projection-${tier.name}`);
        if (input) input.value = preset[tier.name] ?? "";
      }
      $("[data-projection-form]").requestSubmit();
    });
  }
}

async function project(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const values = formValues(form);
  const mix = {};
  for (const [key, value] of Object.entries(values)) {
    if (key.startsWith("tier:") && value !== "") mix[key.slice(5)] = Number(value);
  }
  const body = { tier_mix: mix };
  if (values.users !== "") body.users = Number(values.users);
  const result = await api("POST", "/api/admin/revenue/projection", body);
  if (!result.ok) return showErrors(form, result);
  $("[data-projection-result]").textContent = `Expected MRR: ${money(result.data.mrr)} a month (${result.data.users} users)`;
  $("[data-projection-by-tier]").replaceChildren(
    ...Object.entries(result.data.by_tier).map(([name, amount]) => el("li", { text: `${displayName(name)}: ${money(amount)}` })),
  );
}

// --- users --------------------------------------------------------------------------

async function search(event) {
  event?.preventDefault();
  const q = $("#user-q").value.trim();
  const result = await api("GET", `/api/admin/users?q=${encodeURIComponent(q)}`);
  if (!result.ok) return say(errorMessage(result), "error");
  const table = $("[data-user-results]");
  table.hidden = false;
  $("[data-user-rows]").replaceChildren(
    ...result.data.users.map((u) => {
      const open = el("button", { type: "button", class: "button-secondary button-small", text: "Open" });
      open.setAttribute("aria-label", `Open ${u.username}`);
      open.addEventListener("click", () => openUser(u.id));
      return el(
        "tr",
        {},
        el("td", { text: String(u.id) }),
        el("td", { text: u.username }),
        el("td", { text: u.email }),
        el("td", { text: u.is_suspended ? "suspended" : u.is_admin ? "admin" : "active" }),
        el("td", {}, open),
      );
    }),
  );
  if (!result.data.users.length) say("No user matches.", "warn");
}

async function openUser(id) {
  const result = await api("GET", `/api/admin/users/${id}`);
  if (!result.ok) return say(errorMessage(result), "error");
  const data = result.data;
  currentUser = data.user;
  $("[data-grant-result]").textContent = "";
  const sub = data.subscription;
  $("[data-user-title]").textContent = `${data.user.username} (${data.user.email})`;
  $("[data-user-plan]").textContent = sub ? sub.tier.display_name : "no account";
  $("[data-user-payment]").textContent = sub ? sub.payment_status : "—";
  $("[data-user-monthly]").textContent = data.balance ? String(data.balance.monthly) : "—";
  $("[data-user-purchased]").textContent = data.balance ? String(data.balance.purchased) : "—";
  $("[data-user-promotional]").textContent = sub ? String(sub.promotional_credits_remaining) : "—";
  $("[data-user-balance]").textContent = data.balance ? String(data.balance.total) : "—";
  $("[data-user-state]").textContent = data.user.is_suspended ? "suspended" : "active";
  $("[data-suspend-heading]").textContent = data.user.is_suspended ? "Restore account" : "Suspend account";
  const button = $("[data-suspend-button]");
  button.textContent = data.user.is_suspended ? "Restore" : "Suspend";
  button.className = data.user.is_suspended ? "" : "button-danger";
  fillRows(
    $("[data-ledger-rows]"),
    data.ledger.map((e) => {
      const change = e.monthly_delta + e.purchased_delta + e.promotional_delta;
      return [dateTime(e.created_at), e.kind, change > 0 ? `+${change}` : change, e.balance_after, e.reason || ""];
    }),
    [2, 3],
  );
  fillRows(
    $("[data-user-grant-rows]"),
    data.grants.map((g) => [grantWord(g.category), g.remaining, g.credits, g.expires_at ? expiryDate(g.expires_at) : "never", g.source]),
    [1, 2],
  );
  fillRows(
    $("[data-user-usage-rows]"),
    data.usage.map((u) => [dateTime(u.created_at), u.tool_name || u.action_type, u.credits_used, u.success ? "ok" : u.error_message || "failed"]),
    [2],
  );
  const detail = $("[data-user-detail]");
  detail.hidden = false;
  $("[data-user-title]").focus();
}

async function adjust(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const values = formValues(form);
  const result = await api("POST", `/api/admin/users/${currentUser.id}/adjust`, {
    amount: Number(values.amount),
    reason: values.reason,
  });
  if (!result.ok) return showErrors(form, result);
  form.reset();
  say(`Adjusted ${currentUser.username}: balance now ${plural(result.data.balance.total, "credit")}.`);
  await Promise.all([openUser(currentUser.id), loadAudit()]);
}

async function grant(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const said = await submitGrant(form, `/api/admin/users/${currentUser.id}/grants`, currentUser.username);
  if (!said) return;
  form.reset();
  say(said);
  await Promise.all([openUser(currentUser.id), loadAudit()]);
  form.querySelector("[data-grant-result]").textContent = said;
}

async function suspendOrRestore(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const action = currentUser.is_suspended ? "restore" : "suspend";
  const result = await api("POST", `/api/admin/users/${currentUser.id}/${action}`, formValues(form));
  if (!result.ok) return showErrors(form, result);
  form.reset();
  say(`${currentUser.username} is ${action === "suspend" ? "suspended" : "restored"}.`);
  await Promise.all([openUser(currentUser.id), loadAudit()]);
}

// --- emails and audit ---------------------------------------------------------------

async function loadEmails() {
  const result = await api("GET", "/api/admin/emails");
  if (!result.ok) return;
  $("[data-smtp-note]").textContent = result.data.smtp_configured
    ? "Sent through SMTP_URL; failures are retried."
    : "SMTP_URL is not set: emails are written to the log and kept here.";
  $("[data-email-rows]").replaceChildren(
    ...result.data.emails.map((m) =>
      el(
        "tr",
        {},
        el("td", { text: dateTime(m.created_at) }),
        el("td", { text: m.to }),
        el("td", { text: m.subject }),
        el("td", {}, el("span", { class: "status-chip", "data-status": m.status, text: m.status, title: m.last_error || "" })),
      ),
    ),
  );
}

async function loadAudit() {
  const result = await api("GET", "/api/admin/audit");
  if (!result.ok) return;
  fillRows(
    $("[data-audit-rows]"),
    result.data.entries.map((a) => [dateTime(a.created_at), a.admin_id ?? "", a.action, a.target_user_id ?? "", a.reason]),
  );
}

// --- the books audit (`devops-agent audit`) ----------------------------------------

async function loadBooks() {
  const result = await api("GET", "/api/admin/books");
  if (!result.ok) return;
  const run = result.data.last_run;
  const status = $("[data-books-status]");
  if (!run) {
    status.className = "alert alert-warn";
    status.textContent = "The audit has not run yet: schedule `devops-agent audit` (cron).";
    return;
  }
  status.dataset.ok = String(run.ok);
  status.className = run.ok ? "alert alert-ok" : "alert alert-error";
  status.textContent = run.ok
    ? `Last audit ${dateTime(run.finished_at)}: the books hold (${run.accounts} accounts).`
    : `Last audit ${dateTime(run.finished_at)}: ${run.discrepancies} discrepancies (${run.accounts} accounts).`;
  $("[data-books-examples]").replaceChildren(
    ...run.examples.map((d) => el("li", { text: `${d.check}: ${d.account}: ${d.detail}` })),
  );
}

async function start() {
  const result = await api("GET", "/api/subscription/tiers");
  tiers = result.ok ? result.data.tiers : [];
  buildProjectionInputs();
  $("#revenue-months").addEventListener("change", loadRevenue);
  $("#usage-days").addEventListener("change", loadUsage);
  $("#recognition-month").addEventListener("change", (event) => {
    if (event.currentTarget.checkValidity()) loadRecognition();
  });
  $("[data-recognition-form]").addEventListener("submit", (event) => {
    event.preventDefault();
    loadRecognition();
  });
  $("[data-projection-form]").addEventListener("submit", project);
  $("[data-user-search]").addEventListener("submit", search);
  $("[data-adjust-form]").addEventListener("submit", adjust);
  $("[data-grant-form]").addEventListener("submit", grant);
  $("[data-suspend-form]").addEventListener("submit", suspendOrRestore);
  await Promise.all([loadRevenue(), loadRecognition(), loadUsage(), loadEmails(), loadAudit(), loadBooks()]);
  document.body.dataset.adminReady = "true";
}

start();
