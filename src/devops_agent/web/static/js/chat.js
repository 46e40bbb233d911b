// The chat page: conversations list, messages, the send box. Each reply shows what
// it cost and the balance after it; fewer than 5 credits shows a warning; a 402
// opens the out-of-credits dialog that links to /billing.
import { LOW_CREDITS, api, el, errorMessage, loadSubscription, setCredits } from "./common.js";

const list = document.querySelector("[data-conversation-list]");
const listEmpty = document.querySelector("[data-conversations-empty]");
const messages = document.querySelector("[data-messages]");
const emptyChat = document.querySelector("[data-empty-chat]");
const form = document.querySelector("[data-composer]");
const input = form.elements.namedItem("message");
const sendButton = form.querySelector("[data-send]");
const inputError = document.querySelector("#message-error");
const lowBanner = document.querySelector("[data-low-credits]");
const lowCount = document.querySelector("[data-low-credits-count]");
const errorBanner = document.querySelector("[data-chat-error]");
const dialog = document.querySelector("[data-out-of-credits]");

let conversationId = Number(new URLSearchParams(window.location.search).get("c")) || null;
// The team workspace whose pool pays (an organization's id), or null for the user's own credits.
const workspace = document.querySelector("[data-workspace]");
let orgId = Number(new URLSearchParams(window.location.search).get("org")) || null;

function chatUrl() {
  const params = new URLSearchParams();
  if (conversationId) params.set("c", String(conversationId));
  if (orgId) params.set("org", String(orgId));
  const query = params.toString();
  return query ? `/chat?${query}` : "/chat";
}

async function loadWorkspaces() {
  const result = await api("GET", "/api/orgs");
  const orgs = (result.ok && result.data.organizations) || [];
  if (!orgs.length) {
    orgId = null;
    return;
  }
  for (const org of orgs) workspace.append(el("option", { value: org.id, text: `${org.name} (team pool)` }));
  if (!orgs.some((org) => org.id === orgId)) orgId = null;
  workspace.value = orgId ? String(orgId) : "";
  document.querySelector("[data-workspace-row]").hidden = false;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function showLowCredits(remaining) {
  lowBanner.hidden = remaining >= LOW_CREDITS;
  lowCount.textContent = String(remaining);
}

function showError(message) {
  errorBanner.textContent = message;
  errorBanner.hidden = !message;
}

function scrollToEnd() {
  messages.scrollTop = messages.scrollHeight;
}

/** One message bubble; assistant replies may carry their cost and tool calls. */
function renderMessage(role, content, reply = null) {
  emptyChat.hidden = true;
  const bubble = el("div", { class: `message message-${role === "user" ? "user" : "assistant"}`, "data-role": role });
  bubble.append(el("span", { class: "visually-hidden", text: role === "user" ? "You: " : "Agent: " }));
  bubble.append(document.createTextNode(content));
  if (reply) {
    if (reply.tool_calls && reply.tool_calls.length) {
      const tools = el("ul", { class: "tool-calls", "aria-label": "Tools the agent ran" });
      for (const call of reply.tool_calls) {
        const label = `${call.tool} · ${plural(call.credits_used, "credit")}${call.success ? "" : " · failed"}`;
        tools.append(el("li", { class: "tool-call", "data-success": String(call.success), title: call.summary || "", text: label }));
      }
      bubble.append(tools);
    }
    for (const action of reply.pending_actions || []) bubble.append(actionCard(action));
    bubble.append(
      el("span", {
        class: "message-meta",
        "data-reply-meta": "",
        text: `Cost ${plural(reply.credits_used, "credit")} · ${plural(reply.credits_remaining, "credit")} left`,
      }),
    );
  }
  messages.append(bubble);
  scrollToEnd();
  return bubble;
}

/** A create awaiting approval: nothing is charged until Approve; Decline costs nothing. */
function actionCard(action) {
  const details = Object.entries(action.input || {})
    .map(([key, value]) => `${key} ${value}`)
    .join(", ");
  const card = el("div", { class: "card action-card", "data-action-id": action.id, role: "group", "aria-label": `Approve ${action.tool}` });
  card.append(el("p", { text: `${action.tool} (${details}) · ${plural(action.credits, "credit")} when approved` }));
  const status = el("p", { class: "small muted", "data-action-status": "", "aria-live": "polite" });
  const approve = el("button", { type: "button", "data-action-approve": "", text: "Approve" });
  const decline = el("button", { type: "button", class: "secondary", "data-action-decline": "", text: "Decline" });
  const close = (text) => {
    approve.disabled = true;
    decline.disabled = true;
    status.textContent = text;
  };
  approve.addEventListener("click", async () => {
    approve.disabled = true;
    const result = await api("POST", `/api/chat/actions/${action.id}/approve`);
    if (result.ok) {
      close("Approved");
      renderMessage("assistant", result.data.response, result.data);
      if (!orgId) {
        setCredits(result.data.credits_remaining);
        showLowCredits(result.data.credits_remaining);
      }
    } else if (result.status === 402 && !orgId && result.data.error === "insufficient_credits") {
      approve.disabled = false;
      openOutOfCredits(result.data);
    } else if (result.status === 402) {
      approve.disabled = false;
      status.textContent = errorMessage(result);
    } else {
      close(errorMessage(result));
    }
  });
  decline.addEventListener("click", async () => {
    const result = await api("POST", `/api/chat/actions/${action.id}/decline`);
    close(result.ok ? "Declined: nothing was charged" : errorMessage(result));
  });
  card.append(el("div", { class: "action-buttons" }, approve, decline), status);
  return card;
}

function conversationLink(conversation) {
  const link = el("a", {
    href: `/chat?c=${conversation.id}`,
    text: conversation.title || `Conversation ${conversation.id}`,
    "data-conversation-id": conversation.id,
  });
  if (conversation.id === conversationId) link.setAttribute("aria-current", "true");
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openConversation(conversation.id);
  });
  return el("li", {}, link);
}

async function loadConversations() {
  const result = await api("GET", "/api/conversations");
  if (!result.ok) return;
  const items = result.data.conversations || [];
  list.replaceChildren(...items.map(conversationLink));
  listEmpty.hidden = items.length > 0;
}

function markCurrent() {
  for (const link of list.querySelectorAll("a[data-conversation-id]")) {
    if (Number(link.dataset.conversationId) === conversationId) link.setAttribute("aria-current", "true");
    else link.removeAttribute("aria-current");
  }
}

async function openConversation(id) {
  conversationId = id;
  history.replaceState(null, "", chatUrl());
  markCurrent();
  showError("");
  for (const bubble of messages.querySelectorAll(".message")) bubble.remove();
  emptyChat.hidden = false;
  if (!id) {
    input.focus();
    return;
  }
  const result = await api("GET", `/api/conversations/${id}`);
  if (!result.ok) {
    showError(errorMessage(result));
    return;
  }
  for (const message of result.data.messages || []) renderMessage(message.role, message.content);
  input.focus();
}

function idempotencyKey() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

function openOutOfCredits(data) {
  if (data.message) dialog.querySelector("[data-ooc-message]").textContent = data.message;
  const tier = data.tier && (data.tier.display_name || data.tier.name);
  if (tier) dialog.querySelector("[data-ooc-tier]").textContent = tier;
  dialog.showModal();
  dialog.querySelector("[data-ooc-billing]").focus();
}

async function send() {
  const text = input.value.trim();
  inputError.textContent = "";
  input.removeAttribute("aria-invalid");
  if (!text) {
    inputError.textContent = "Type a message first.";
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  showError("");
  sendButton.disabled = true;
  sendButton.textContent = "Sending…";
  const body = { message: text };
  if (conversationId) body.conversation_id = conversationId;
  if (orgId) body.org_id = orgId;
  const result = await api("POST", "/api/chat", body, { "Idempotency-Key": idempotencyKey() });
  sendButton.disabled = false;
  sendButton.textContent = "Send";
  if (result.ok) {
    const reply = result.data;
    renderMessage("user", text);
    renderMessage("assistant", reply.response, reply);
    input.value = "";
    if (!orgId) {
      // The header counts the user's own credits; a team's pool is shown on the reply.
      setCredits(reply.credits_remaining);
      showLowCredits(reply.credits_remaining);
    }
    if (reply.conversation_id !== conversationId) {
      conversationId = reply.conversation_id;
      history.replaceState(null, "", chatUrl());
      await loadConversations();
    }
  } else if (result.status === 402 && orgId) {
    // A team's pool is empty or this member's cap is reached: the owner or an admin can fix it.
    showError(errorMessage(result));
  } else if (result.status === 402 && result.data.error === "insufficient_credits") {
    // The message is kept in the box so it can be sent again after buying credits.
    setCredits(result.data.credits_remaining ?? 0);
    showLowCredits(result.data.credits_remaining ?? 0);
    openOutOfCredits(result.data);
  } else if (result.status === 422 || result.status === 400) {
    inputError.textContent = errorMessage(result);
    input.setAttribute("aria-invalid", "true");
  } else {
    showError(errorMessage(result));
  }
  input.focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (!sendButton.disabled) send();
  }
});
document.querySelector("[data-new-conversation]").addEventListener("click", () => openConversation(null));
dialog.querySelector("[data-ooc-close]").addEventListener("click", () => dialog.close());

loadSubscription().then((result) => {
  if (result.ok) showLowCredits(result.data.subscription.credits_remaining);
});
workspace.addEventListener("change", () => {
  // A conversation runs in one workspace: switching starts a new one.
  orgId = Number(workspace.value) || null;
  openConversation(null);
});
loadWorkspaces();
loadConversations();
if (conversationId) openConversation(conversationId);
