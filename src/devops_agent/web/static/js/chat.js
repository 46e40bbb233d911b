// The chat page: conversations list, messages, the send box. Each reply shows what
// it cost and the balance after it, drawn from the same fields whether it just arrived
// (POST /api/chat) or was reloaded (GET /api/conversations/{id}); fewer than 5 credits
// shows a warning; a 402 opens the out-of-credits dialog, which sells a pack right there.
import {
  LOW_CREDITS,
  actionLabel,
  api,
  el,
  errorMessage,
  loadSubscription,
  plural,
  setBalances,
  setCredits,
  shortDate,
  usd,
} from "./common.js";

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
const chatHead = document.querySelector("[data-chat-head]");
const chatTitle = document.querySelector("[data-chat-title]");
const renameForm = document.querySelector("[data-rename-form]");

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

/** The header's monthly/purchased split after a change only the total was told of. */
function refreshSplit() {
  loadSubscription(true).then((result) => {
    if (result.ok) setBalances(result.data.subscription);
  });
}

function showLowCredits(remaining) {
  lowBanner.hidden = remaining >= LOW_CREDITS;
  lowCount.textContent = plural(remaining, "credit");
}

function showError(message) {
  errorBanner.textContent = message;
  errorBanner.hidden = !message;
}

function scrollToEnd() {
  messages.scrollTop = messages.scrollHeight;
}

const AGENT_NAMES = { offline: "Offline agent", claude: "Claude" };
// Who answers a live reply (a stored one says so itself).
const pageAgent = document.querySelector("[data-agent]").dataset.agent;

/**
 * One message bubble. An assistant message carries its costs, the same fields live
 * and after a reload: {credits_used, balance_after, tool_calls: [{tool, credits_used,
 * success, summary}], agent}; replies stored before costs were kept have none.
 */
function renderMessage(role, content, costs = null) {
  emptyChat.hidden = true;
  const mine = role === "user";
  const bubble = el("div", { class: `message message-${mine ? "user" : "assistant"}`, "data-role": role });
  if (!mine) {
    const name = costs ? costs.agent || (costs.conversation_id ? pageAgent : null) : null;
    const agent = name ? AGENT_NAMES[name] || name : null;
    bubble.append(el("span", { class: "message-author", text: agent ? `DevOps Agent · ${agent}` : "DevOps Agent" }));
  } else {
    bubble.append(el("span", { class: "visually-hidden", text: "You: " }));
  }
  bubble.append(el("span", { class: "message-text", text: content }));
  if (costs) {
    const calls = costs.tool_calls || [];
    if (calls.length) {
      const tools = el("ul", { class: "tool-calls", "aria-label": "Tools the agent ran" });
      for (const call of calls) {
        const label = `${actionLabel(call.tool)} · ${plural(call.credits_used, "credit")}${call.success ? "" : " · failed"}`;
        tools.append(
          el("li", { class: "tool-call", "data-tool": call.tool, "data-success": String(call.success), title: call.summary || "", text: label }),
        );
      }
      bubble.append(tools);
    }
    for (const action of costs.pending_actions || []) bubble.append(actionCard(action));
    if (costs.credits_used !== null && costs.credits_used !== undefined) {
      const after = costs.balance_after ?? costs.credits_remaining;
      bubble.append(
        el("span", {
          class: "message-meta",
          "data-reply-meta": "",
          text: `Cost ${plural(costs.credits_used, "credit")} · ${plural(after, "credit")} left`,
        }),
      );
    }
  }
  messages.append(bubble);
  scrollToEnd();
  return bubble;
}

/** The "agent is typing" bubble shown while a reply is on its way. */
function showTyping() {
  const bubble = el(
    "div",
    { class: "message message-assistant typing", "data-typing": "", role: "status" },
    el("span", { class: "visually-hidden", text: "The agent is writing a reply" }),
    el("span", { class: "typing-dots", "aria-hidden": "true" }, el("span"), el("span"), el("span")),
  );
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

let conversations = [];

async function loadConversations() {
  const result = await api("GET", "/api/conversations");
  if (!result.ok) return;
  conversations = result.data.conversations || [];
  list.replaceChildren(...conversations.map(conversationLink));
  listEmpty.hidden = conversations.length > 0;
  showHead();
}

function showHead() {
  const current = conversations.find((c) => c.id === conversationId);
  chatHead.hidden = !current;
  renameForm.hidden = true;
  if (current) chatTitle.textContent = current.title || `Conversation ${current.id}`;
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
  showHead();
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
  for (const message of result.data.messages || []) {
    renderMessage(message.role, message.content, message.role === "user" ? null : message);
  }
  input.focus();
}

function idempotencyKey() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

let oocPack = null;

async function openOutOfCredits(data) {
  if (data.message) dialog.querySelector("[data-ooc-message]").textContent = data.message;
  const tier = data.tier && (data.tier.display_name || data.tier.name);
  if (tier) dialog.querySelector("[data-ooc-tier]").textContent = tier;
  dialog.querySelector("[data-ooc-result]").textContent = "";
  const [sub, packs] = await Promise.all([loadSubscription(true), api("GET", "/api/credits/packs")]);
  const reset = dialog.querySelector("[data-ooc-reset]");
  if (sub.ok) {
    const s = sub.data.subscription;
    reset.textContent = `Your ${plural(s.tier.monthly_credits, "monthly credit")} come back on ${shortDate(s.current_period_end)}.`;
  }
  const list = (packs.ok && packs.data.packs) || [];
  oocPack = list.find((p) => p.popular) || list[0] || null;
  const box = dialog.querySelector("[data-ooc-pack]");
  box.hidden = !oocPack;
  if (oocPack) {
    dialog.querySelector("[data-ooc-pack-label]").textContent =
      `${plural(oocPack.credits, "credit")} for ${usd(oocPack.price)}, never expiring`;
    dialog.querySelector("[data-ooc-pack-credits]").textContent = String(oocPack.credits);
  }
  dialog.showModal();
  (oocPack ? dialog.querySelector("[data-ooc-buy]") : dialog.querySelector("[data-ooc-billing]")).focus();
}

async function buyFromDialog() {
  if (!oocPack) return;
  const button = dialog.querySelector("[data-ooc-buy]");
  const out = dialog.querySelector("[data-ooc-result]");
  button.disabled = true;
  out.textContent = "Buying…";
  const result = await api("POST", "/api/credits/purchase", { pack_size: oocPack.credits }, { "Idempotency-Key": idempotencyKey() });
  button.disabled = false;
  if (result.ok && result.data.checkout_url) {
    window.location.assign(result.data.checkout_url);
    return;
  }
  if (!result.ok) {
    out.textContent = errorMessage(result);
    return;
  }
  setCredits(result.data.credits_remaining);
  showLowCredits(result.data.credits_remaining);
  refreshSplit();
  out.textContent = `Done: you now have ${plural(result.data.credits_remaining, "credit")}. Send your message again.`;
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
  // The message shows at once, with the agent "typing" until its reply arrives.
  const sent = renderMessage("user", text);
  input.value = "";
  const typing = showTyping();
  const result = await api("POST", "/api/chat", body, { "Idempotency-Key": idempotencyKey() });
  typing.remove();
  sendButton.disabled = false;
  sendButton.textContent = "Send";
  if (!result.ok) {
    // Not sent: the bubble goes and the text is back in the box, to send again.
    sent.remove();
    input.value = text;
    emptyChat.hidden = messages.querySelectorAll(".message").length > 0;
  }
  if (result.ok) {
    const reply = result.data;
    renderMessage("assistant", reply.response, reply);
    if (!orgId) {
      // The header counts the user's own credits; a team's pool is shown on the reply.
      setCredits(reply.credits_remaining);
      showLowCredits(reply.credits_remaining);
      refreshSplit();
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
dialog.querySelector("[data-ooc-buy]").addEventListener("click", buyFromDialog);

// Rename and delete the open conversation.
chatHead.querySelector("[data-rename]").addEventListener("click", () => {
  renameForm.hidden = false;
  renameForm.elements.namedItem("title").value = chatTitle.textContent;
  renameForm.elements.namedItem("title").focus();
});
renameForm.querySelector("[data-rename-cancel]").addEventListener("click", () => {
  renameForm.hidden = true;
  chatHead.querySelector("[data-rename]").focus();
});
renameForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = renameForm.elements.namedItem("title");
  const error = renameForm.querySelector("#conversation-title-error");
  const title = field.value.trim();
  error.textContent = "";
  field.removeAttribute("aria-invalid");
  if (!title) {
    error.textContent = "Give the conversation a name.";
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return;
  }
  const result = await api("PATCH", `/api/conversations/${conversationId}`, { title });
  if (!result.ok) {
    error.textContent = errorMessage(result);
    field.setAttribute("aria-invalid", "true");
    return;
  }
  await loadConversations();
  chatHead.querySelector("[data-rename]").focus();
});
const deleteDialog = document.querySelector("[data-delete-dialog]");
chatHead.querySelector("[data-delete]").addEventListener("click", () => {
  deleteDialog.showModal();
  deleteDialog.querySelector("[data-delete-cancel]").focus();
});
deleteDialog.querySelector("[data-delete-cancel]").addEventListener("click", () => deleteDialog.close());
deleteDialog.querySelector("[data-delete-confirm]").addEventListener("click", async () => {
  const result = await api("DELETE", `/api/conversations/${conversationId}`);
  deleteDialog.close();
  if (!result.ok) {
    showError(errorMessage(result));
    return;
  }
  await loadConversations();
  await openConversation(null);
});

loadSubscription().then((result) => {
  if (result.ok) showLowCredits(result.data.subscription.credits_remaining);
});
workspace.addEventListener("change", () => {
  // A conversation runs in one workspace: switching starts a new one.
  orgId = Number(workspace.value) || null;
  openConversation(null);
});
loadWorkspaces();
// /chat opens the conversation in the address, else the most recent one.
loadConversations().then(() => {
  if (!conversationId && conversations.length) conversationId = conversations[0].id;
  if (conversationId) openConversation(conversationId);
});
