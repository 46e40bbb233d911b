// The "Activity" section of /billing: every movement of the customer's credits, newest
// first, from GET /api/credits/ledger (cursor pages), with readable kinds, a link to the
// conversation a charge was for, and the CSV export with the same filters; above it, what
// expires when ("40 promotional credits expire on Dec 31, 2026"), one line per grant with
// an expiry from GET /api/credits/grants, soonest first. It reloads when a purchase or a
// plan change happens on the page.
import { api, dateTime, el, errorMessage, expiringItems, kindLabel, plural } from "./common.js";

const section = document.querySelector("[data-activity]");
const rows = section.querySelector("[data-activity-rows]");
const empty = section.querySelector("[data-activity-empty]");
const more = section.querySelector("[data-activity-more]");
const summary = section.querySelector("[data-activity-summary]");
const filters = section.querySelector("[data-activity-filters]");
const csvLink = section.querySelector("[data-activity-csv]");
const expiring = section.querySelector("[data-expiring]");
const expiringList = section.querySelector("[data-expiring-list]");
const PAGE = 20;

let cursor = null;
let shown = 0; // movements listed
let total = 0; // their credits added up

function query(extra = {}) {
  const params = new URLSearchParams();
  const month = filters.elements.namedItem("month").value;
  const kind = filters.elements.namedItem("kind").value;
  if (month) params.set("month", month);
  if (kind) params.set("kind", kind);
  for (const [key, value] of Object.entries(extra)) params.set(key, String(value));
  return params;
}

function signed(n) {
  return n > 0 ? `+${n}` : String(n);
}

function row(entry) {
  const what = el("td", {}, el("strong", { text: kindLabel(entry.kind) }));
  if (entry.reason) what.append(el("span", { class: "activity-reason", text: entry.reason }));
  if (entry.conversation_id) {
    what.append(el("a", { class: "activity-link", href: `/chat?c=${entry.conversation_id}`, text: "Open the conversation" }));
  }
  const promotional = entry.promotional_after || 0;
  const after = entry.monthly_after + entry.purchased_after + promotional;
  let split = `${plural(entry.monthly_after, "monthly credit")} and ${plural(entry.purchased_after, "purchased credit")}`;
  if (promotional) split = `${plural(entry.monthly_after, "monthly credit")}, ${plural(entry.purchased_after, "purchased credit")} and ${plural(promotional, "promotional credit")}`;
  return el(
    "tr",
    { "data-entry-id": entry.id, "data-credits": entry.credits, "data-kind": entry.kind },
    el("td", { text: dateTime(entry.at) }),
    what,
    el("td", { class: `num ${entry.credits < 0 ? "debit" : "credit"}`, text: signed(entry.credits) }),
    el("td", { class: "num", title: split, text: String(after) }),
  );
}

/** One line per grant that expires, soonest first. */
async function loadExpiring() {
  const result = await api("GET", "/api/credits/grants");
  if (!result.ok) return;
  const lines = expiringItems(result.data.grants);
  expiringList.replaceChildren(...lines);
  expiring.hidden = lines.length === 0;
}

async function load(reset) {
  if (reset) {
    cursor = null;
    shown = 0;
    total = 0;
    rows.replaceChildren();
    loadExpiring();
  }
  const params = query({ limit: PAGE, ...(cursor ? { cursor } : {}) });
  const result = await api("GET", `/api/credits/ledger?${params}`);
  if (!result.ok) {
    summary.textContent = errorMessage(result);
    return;
  }
  for (const entry of result.data.entries) {
    rows.append(row(entry));
    shown += 1;
    total += entry.credits;
  }
  cursor = result.data.next_cursor;
  more.hidden = !cursor;
  empty.hidden = shown > 0;
  summary.textContent = shown
    ? `${plural(shown, "movement")} shown, adding up to ${signed(total)} ${Math.abs(total) === 1 ? "credit" : "credits"}${cursor ? "; older ones follow" : ""}.`
    : "";
  const csv = query();
  csvLink.href = `/api/credits/ledger.csv${csv.toString() ? `?${csv}` : ""}`;
}

filters.addEventListener("submit", (event) => {
  event.preventDefault();
  load(true);
});
more.addEventListener("click", () => load(false));
document.addEventListener("subscription:changed", () => load(true));
load(true);
