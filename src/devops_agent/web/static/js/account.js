// The account page: the plan name, API keys (create with the secret shown once,
// list, revoke; the server renders the form only where the plan has api_access,
// and keys made on an earlier plan can still be revoked), the password change and
// "log out everywhere", and the usage history, a page at a time.
import { api, clearErrors, dateTime, el, errorMessage, formValues, loadSubscription, showErrors } from "./common.js";

const KEYS = "/api/keys";
const PAGE_SIZE = 20;
const $ = (selector) => document.querySelector(selector);

// --- plan ---------------------------------------------------------------------------

loadSubscription().then((result) => {
  if (result.ok) $("[data-account-tier]").textContent = result.data.subscription.tier.display_name;
});

// --- API keys -----------------------------------------------------------------------

const keyForm = $("[data-key-form]");
const keysTable = $("[data-keys-table]");
const keysBody = $("[data-keys-body]");
const keysEmpty = $("[data-keys-empty]");
const keysError = $("[data-keys-error]");
const newSecret = $("[data-new-secret]");

function keyRow(key) {
  const revoke = el("button", {
    type: "button",
    class: "button-danger button-small",
    text: "Revoke",
    "aria-label": `Revoke key ${key.name}`,
  });
  revoke.addEventListener("click", async () => {
    if (!window.confirm(`Revoke the key "${key.name}"? Scripts that use it stop working at once.`)) return;
    revoke.disabled = true;
    const result = await api("DELETE", `${KEYS}/${key.id}`);
    if (!result.ok) {
      revoke.disabled = false;
      keysError.textContent = errorMessage(result);
      keysError.hidden = false;
      return;
    }
    await loadKeys();
  });
  return el(
    "tr",
    { "data-key-id": key.id },
    el("td", { text: key.name }),
    el("td", {}, el("code", { text: `${key.prefix}…` })),
    el("td", { text: dateTime(key.created_at) }),
    el("td", { text: key.last_used_at ? dateTime(key.last_used_at) : "never" }),
    el("td", {}, revoke),
  );
}

async function loadKeys() {
  const result = await api("GET", KEYS);
  if (!result.ok) {
    keysError.textContent = errorMessage(result);
    keysError.hidden = false;
    return;
  }
  keysError.hidden = true;
  const active = (result.data.keys || []).filter((k) => !k.revoked_at);
  keysBody.replaceChildren(...active.map(keyRow));
  keysTable.hidden = active.length === 0;
  keysEmpty.hidden = active.length > 0;
}

keyForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(keyForm);
  const button = keyForm.querySelector("button[type=submit]");
  button.disabled = true;
  const values = formValues(keyForm);
  const result = await api("POST", KEYS, values.name ? { name: values.name } : {});
  button.disabled = false;
  if (!result.ok) {
    showErrors(keyForm, result);
    return;
  }
  $("[data-secret]").textContent = result.data.secret;
  newSecret.hidden = false;
  keyForm.reset();
  await loadKeys();
});

// --- password and sessions ----------------------------------------------------------

const passwordForm = $("[data-password-form]");
const passwordDone = $("[data-password-done]");

passwordForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(passwordForm);
  passwordDone.hidden = true;
  const button = passwordForm.querySelector("button[type=submit]");
  button.disabled = true;
  const { current_password, new_password } = formValues(passwordForm);
  const result = await api("POST", "/api/account/password", { current_password, new_password });
  button.disabled = false;
  if (!result.ok) {
    showErrors(passwordForm, result);
    return;
  }
  passwordForm.reset();
  passwordDone.hidden = false;
});

const everywhere = $("[data-logout-everywhere]");
everywhere.addEventListener("click", async () => {
  everywhere.disabled = true;
  const result = await api("POST", "/api/auth/logout-everywhere");
  if (result.ok) {
    window.location.assign("/login");
    return;
  }
  everywhere.disabled = false;
  const error = $("[data-logout-everywhere-error]");
  error.textContent = errorMessage(result);
  error.hidden = false;
});

// --- usage history ------------------------------------------------------------------

let offset = 0;
const prev = $("[data-usage-prev]");
const next = $("[data-usage-next]");

function usageRow(log) {
  return el(
    "tr",
    {},
    el("td", { text: dateTime(log.created_at) }),
    el("td", { text: log.action_type === "agent_message" ? "Message" : "Tool" }),
    el("td", {}, log.tool_name ? el("code", { text: log.tool_name }) : "—"),
    el("td", { class: "num", text: String(log.credits_used) }),
    el("td", { text: log.success ? "OK" : `Failed${log.error_message ? `: ${log.error_message}` : ""}` }),
  );
}

async function loadUsage() {
  const result = await api("GET", `/api/usage/history?limit=${PAGE_SIZE}&offset=${offset}`);
  if (!result.ok) {
    $("[data-usage-summary]").textContent = errorMessage(result);
    return;
  }
  const { logs, total } = result.data;
  $("[data-usage-body]").replaceChildren(...logs.map(usageRow));
  $("[data-usage-empty]").hidden = total > 0;
  const first = total ? offset + 1 : 0;
  const last = offset + logs.length;
  $("[data-usage-summary]").textContent = `${total} action${total === 1 ? "" : "s"} in total`;
  $("[data-usage-page]").textContent = total ? `${first}–${last} of ${total}` : "";
  prev.disabled = offset === 0;
  next.disabled = last >= total;
}

prev.addEventListener("click", () => {
  offset = Math.max(offset - PAGE_SIZE, 0);
  loadUsage();
});
next.addEventListener("click", () => {
  offset += PAGE_SIZE;
  loadUsage();
});

loadKeys();
loadUsage();
