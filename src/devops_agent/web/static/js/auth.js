// Sign-up and login forms: post to the JSON API, show its errors next to the
// fields, and go on to the chat (or the page that sent the user to log in).
import { api, clearErrors, formValues, showErrors } from "./common.js";

const ENDPOINTS = { register: "/api/auth/register", login: "/api/auth/login" };

/**
 * Only paths on this site are followed after login, never another origin: the value is
 * read by the browser's own URL parser (which drops tabs and newlines and reads "\\" as
 * "/"), and kept only when it resolves to this origin.
 */
function safeNext(path) {
  if (!path || !path.startsWith("/")) return "/chat";
  let url;
  try {
    url = new URL(path, window.location.origin);
  } catch {
    return "/chat";
  }
  if (url.origin !== window.location.origin) return "/chat";
  return `${url.pathname}${url.search}${url.hash}`;
}

for (const form of document.querySelectorAll("form[data-auth-form]")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const result = await api("POST", ENDPOINTS[form.dataset.authForm], formValues(form));
    button.disabled = false;
    if (result.ok) {
      window.location.assign(safeNext(form.dataset.next));
    } else {
      showErrors(form, result);
    }
  });
}
