// Shared helpers for every page: the JSON API client (with the CSRF double-submit
// token the contract requires), form error display, the header's credit counter,
// and logout. Pages import what they need; loading this module also wires the header.

export const LOW_CREDITS = 5;

/** Read one cookie by name (the CSRF token cookie is deliberately readable). */
export function cookie(name) {
  const prefix = `${name}=`;
  for (const part of document.cookie.split(";")) {
    const item = part.trim();
    if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
  }
  return "";
}

/**
 * Call the JSON API and never throw for an HTTP error: resolve to {ok, status, data}
 * where `data` is the parsed body (the contract's {error, message} on failure).
 * A network failure resolves to status 0 with a readable message.
 */
export async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") {
    const token = cookie("csrf_token");
    if (token) headers["X-CSRF-Token"] = token;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return {
      ok: false,
      status: 0,
      data: { error: "network_error", message: "The server could not be reached. Check your connection and try again." },
    };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = { error: "bad_response", message: `The server answered ${response.status} without a readable body.` };
    }
  }
  if (response.status === 401 && !path.startsWith("/api/auth/")) {
    // The session ended (logout elsewhere, expiry): go and sign in again.
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
  }
  return { ok: response.ok, status: response.status, data };
}

/** A readable message for a failed call. */
export function errorMessage(result) {
  return (result.data && result.data.message) || `Something went wrong (HTTP ${result.status}).`;
}

/** Field name a `details` entry of a 422 names, whatever its exact shape. */
function detailField(detail) {
  if (detail.field) return String(detail.field).split(".").pop();
  if (Array.isArray(detail.loc)) return String(detail.loc[detail.loc.length - 1]);
  return null;
}

/** Clear the errors a previous submit left on a form. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const summary = form.querySelector("[data-form-error]");
  if (summary) summary.textContent = "";
}

/**
 * Show an API error on a form: each 422 detail next to its field, anything else
 * (or a detail without a field on this form) in the form's error summary.
 * A body-level `field` (e.g. a 409 on the username) is placed next to that field.
 */
export function showErrors(form, result) {
  clearErrors(form);
  const leftovers = [];
  const details = (result.data && Array.isArray(result.data.details) && result.data.details) || [];
  const placed = new Set();
  const place = (name, message) => {
    const input = name && form.elements.namedItem(name);
    const slot = input && form.querySelector(`#${input.id}-error`);
    if (!slot) return false;
    slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
    input.setAttribute("aria-invalid", "true");
    if (!placed.size) input.focus();
    placed.add(name);
    return true;
  };
  for (const detail of details) {
    const message = detail.message || detail.msg || "This value is not valid.";
    if (!place(detailField(detail), message)) leftovers.push(message);
  }
  if (!details.length) {
    const field = result.data && result.data.field;
    if (!place(field, errorMessage(result))) leftovers.push(errorMessage(result));
  } else if (leftovers.length === 0 && !placed.size) {
    leftovers.push(errorMessage(result));
  }
  const summary = form.querySelector("[data-form-error]");
  if (summary && leftovers.length) {
    summary.textContent = leftovers.join(" ");
    if (!placed.size) summary.focus();
  }
}

/** Collect a form's named inputs as a plain object of strings. */
export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

/** "1 credit", "2 credits": a count with its noun, singular for one. */
export function plural(n, word, many = `${word}s`) {
  return `${Number(n).toLocaleString("en-US")} ${Number(n) === 1 ? word : many}`;
}

let labelsCache = null;
function labels() {
  if (!labelsCache) {
    const node = document.getElementById("labels");
    try {
      labelsCache = node ? JSON.parse(node.textContent) : {};
    } catch {
      labelsCache = {};
    }
  }
  return labelsCache;
}

function words(name) {
  const text = String(name || "").replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The readable name of an action: "List EC2 instances", never `get_ec2_instances`. */
export function actionLabel(name) {
  const actions = labels().actions || {};
  return actions[name || "agent_message"] || words(name);
}

/** The readable name of a ledger kind: "Plan change", never `tier_change`. */
export function kindLabel(kind) {
  const kinds = labels().kinds || {};
  return kinds[kind] || words(kind);
}

/** Update every credit counter on the page (the header pill and any page widgets). */
export function setCredits(remaining) {
  for (const el of document.querySelectorAll("[data-credits-remaining]")) {
    el.textContent = String(remaining);
  }
  for (const el of document.querySelectorAll("[data-credits-word]")) {
    el.textContent = Number(remaining) === 1 ? "credit" : "credits";
  }
  for (const pill of document.querySelectorAll("[data-credit-counter]")) {
    pill.dataset.low = String(remaining < LOW_CREDITS);
  }
  document.dispatchEvent(new CustomEvent("credits:changed", { detail: { remaining } }));
}

/**
 * Show a subscription's balances: the total, and in the header its split into monthly
 * credits (with the date they reset) and purchased credits (which never expire).
 */
export function setBalances(sub) {
  setCredits(sub.credits_remaining);
  const monthly = sub.monthly_credits_remaining;
  const purchased = sub.purchased_credits_remaining;
  const promotional = sub.promotional_credits_remaining || 0;
  const reset = shortDate(sub.current_period_end);
  let detail = `${plural(monthly, "monthly credit")} until ${reset}, ${plural(purchased, "purchased credit")} that never expire`;
  if (promotional) detail += `, ${plural(promotional, "promotional credit")}`;
  for (const pill of document.querySelectorAll("[data-credit-counter]")) pill.title = detail;
  for (const said of document.querySelectorAll("[data-credit-detail]")) said.textContent = `: ${detail}`;
  for (const split of document.querySelectorAll("[data-credit-split]")) {
    split.textContent = `${monthly} monthly · ${purchased} purchased${promotional ? ` · ${promotional} promotional` : ""}`;
  }
}

/** Fetch the subscription once (pages that need it share this promise). */
let subscriptionPromise = null;
export function loadSubscription(force = false) {
  if (force || !subscriptionPromise) subscriptionPromise = api("GET", "/api/subscription");
  return subscriptionPromise;
}

/** Format USD for display (money arrives as a JSON number). */
export function usd(amount) {
  const value = Number(amount);
  return Number.isInteger(value) ? `$${value}` : `$${value.toFixed(2)}`;
}

/** A date (ISO string) as "1 Dec 2025" in the reader's locale. */
export function shortDate(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
}

/**
 * The day a grant expires (ISO string), in UTC: the day the ledger's expiry row names
 * ("40 promotional credits expired on 2026-12-31"), wherever the reader is.
 */
export function expiryDate(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
}

/** How a grant's credits are called by its category: "monthly", "purchased", "promotional". */
export function grantWord(category) {
  return { plan: "monthly", paid: "purchased" }[category] || category;
}

/** "40 promotional credits expire on Dec 31, 2026" for a grant (from GET /api/credits/grants) with an expiry. */
export function expiryLine(grant) {
  return `${plural(grant.remaining, `${grantWord(grant.category)} credit`)} expire${grant.remaining === 1 ? "s" : ""} on ${expiryDate(grant.expires_at)}`;
}

/**
 * Post a promotional grant form (credits, expires_at as a day, reason) to ``url``; on
 * success the sentence that says what was given to ``whom``, else null (the errors shown
 * on the form).
 */
export async function submitGrant(form, url, whom) {
  clearErrors(form);
  const values = formValues(form);
  const result = await api("POST", url, {
    credits: Number(values.credits),
    // A date input gives a day: the credits last until its end, in UTC (the API wants a time zone).
    expires_at: values.expires_at ? `${values.expires_at}T23:59:59Z` : null,
    reason: values.reason,
  });
  if (!result.ok) {
    showErrors(form, result);
    return null;
  }
  const given = result.data.grant;
  const until = given.expires_at ? `, expiring on ${expiryDate(given.expires_at)}` : ", never expiring";
  return `Granted ${plural(given.credits, "promotional credit")} to ${whom}${until}.`;
}

/** One list item per grant that expires (from GET /api/credits/grants), soonest first. */
export function expiringItems(grants) {
  return grants
    .filter((grant) => grant.expires_at)
    .sort((a, b) => Date.parse(a.expires_at) - Date.parse(b.expires_at))
    .map((grant) => el("li", { "data-grant-id": grant.id, text: expiryLine(grant) }));
}

/** A timestamp (ISO string) as date and time in the reader's locale. */
export function dateTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Build an element: el("li", {class: "x", text: "y"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, String(value));
    else if (key in node) node[key] = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function wireHeader() {
  for (const logout of document.querySelectorAll("[data-logout]")) {
    logout.addEventListener("click", async () => {
      logout.disabled = true;
      await api("POST", "/api/auth/logout");
      window.location.assign("/");
    });
  }
  if (document.querySelector("[data-credit-counter]")) {
    loadSubscription().then((result) => {
      if (result.ok) setBalances(result.data.subscription);
    });
  }
}

wireHeader();
