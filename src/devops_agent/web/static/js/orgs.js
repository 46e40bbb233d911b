// The organizations' pages: the list and create form (/orgs), joining by invitation
// (/orgs/join/<token>) and one team's workspace (/orgs/<id>). Every number and every
// change goes through the /api/orgs endpoints; what a role may not do is hidden here
// and refused by the API anyway.
import {
  actionLabel,
  api,
  clearErrors,
  el,
  errorMessage,
  expiringItems,
  formValues,
  plural,
  shortDate,
  showErrors,
  submitGrant,
} from "./common.js";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

function say(node, message, kind = "ok") {
  if (!node) return;
  node.hidden = !message;
  node.className = `alert alert-${kind}`;
  node.textContent = message || "";
}

// --- /orgs -------------------------------------------------------------------------

async function listPage() {
  const list = $("[data-orgs-list]");
  const result = await api("GET", "/api/orgs");
  if (!result.ok) {
    say($("[data-orgs-error]"), errorMessage(result), "error");
    return;
  }
  const orgs = result.data.organizations;
  $("[data-orgs-empty]").hidden = orgs.length > 0;
  list.replaceChildren(
    ...orgs.map((org) =>
      el("li", {}, el("a", { href: `/orgs/${org.id}`, text: org.name }), el("span", { class: "muted small", text: ` · ${org.role}` })),
    ),
  );
  const form = $("[data-create-org]");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const created = await api("POST", "/api/orgs", { name: formValues(form).name.trim() });
    if (!created.ok) {
      showErrors(form, created);
      return;
    }
    window.location.assign(`/orgs/${created.data.organization.id}`);
  });
}

// --- /orgs/join/<token> ------------------------------------------------------------

async function joinPage(root) {
  const token = root.dataset.token;
  const summary = $("[data-join-summary]", root);
  const button = $("[data-accept]", root);
  const error = $("[data-join-error]", root);
  const preview = await api("GET", `/api/orgs/invitations/${encodeURIComponent(token)}`);
  if (!preview.ok) {
    summary.textContent = "";
    say(error, errorMessage(preview), "error");
    return;
  }
  const inv = preview.data;
  summary.textContent = `You are invited to join ${inv.organization_name} as ${inv.role} (invitation for ${inv.email}, ${inv.status}, expires ${shortDate(inv.expires_at)}).`;
  button.hidden = inv.status !== "pending";
  button.addEventListener("click", async () => {
    button.disabled = true;
    const accepted = await api("POST", "/api/orgs/invitations/accept", { token });
    if (!accepted.ok) {
      button.disabled = false;
      say(error, errorMessage(accepted), "error");
      return;
    }
    window.location.assign(`/orgs/${accepted.data.organization.id}`);
  });
}

// --- /orgs/<id> --------------------------------------------------------------------

function capText(cap) {
  return cap === null || cap === undefined ? "no cap" : plural(cap, "credit");
}

async function orgPage(root) {
  const id = root.dataset.orgId;
  const base = `/api/orgs/${id}`;
  const status = $("[data-org-status]", root);
  let me = null;

  const detail = await api("GET", base);
  if (!detail.ok) {
    root.replaceChildren(el("h1", { text: "Team not found" }), el("p", { class: "alert alert-error", text: errorMessage(detail) }));
    return;
  }

  function showPool(org) {
    me = org;
    $("[data-org-name]", root).textContent = org.name;
    $("[data-org-role]", root).textContent = org.role;
    $("[data-pool-credits]", root).textContent = String(org.credits_remaining);
    $("[data-pool-tier]", root).textContent = org.tier.display_name;
    $("[data-pool-period-end]", root).textContent = shortDate(org.current_period_end);
    $("[data-my-used]", root).textContent = plural(org.my_credits_used, "credit");
    $("[data-my-cap]", root).textContent = capText(org.my_cap);
    const admin = org.role === "owner" || org.role === "admin";
    for (const node of $$("[data-admin-only]", root)) node.hidden = !admin;
    for (const node of $$("[data-owner-only]", root)) node.hidden = org.role !== "owner";
    for (const node of $$("[data-not-owner]", root)) node.hidden = org.role === "owner";
    const defaultCap = $("#default-cap", root);
    if (defaultCap) defaultCap.value = org.default_member_cap ?? "";
    loadExpiring();
  }

  /** What expires when in the pool ("40 promotional credits expire on Dec 31, 2026"). */
  async function loadExpiring() {
    const result = await api("GET", `/api/credits/grants?org_id=${id}`);
    if (!result.ok) return;
    const lines = expiringItems(result.data.grants);
    $("[data-pool-expiring-list]", root).replaceChildren(...lines);
    $("[data-pool-expiring]", root).hidden = lines.length === 0;
  }

  async function refreshPool() {
    const again = await api("GET", base);
    if (again.ok) showPool(again.data.organization);
  }

  function memberRow(m) {
    // The owner manages everyone else; an admin manages members only (never another admin or the owner).
    const manages = me.role === "owner" || (me.role === "admin" && m.role === "member");
    const actions = el("td", { "data-label": "Actions" });
    const capCell = el("td", {
      "data-label": "Cap",
      text: m.monthly_cap === null ? `default (${capText(m.effective_cap)})` : capText(m.monthly_cap),
    });
    if (manages) {
      const input = el("input", {
        type: "number",
        min: "0",
        inputmode: "numeric",
        value: m.monthly_cap ?? "",
        "aria-label": `Monthly cap of ${m.username} (empty: the default)`,
        "data-cap-input": m.username,
      });
      const save = el("button", { type: "button", class: "button-small button-secondary", text: "Set cap" });
      save.addEventListener("click", async () => {
        const raw = input.value.trim();
        const done = await api("PUT", `${base}/members/${m.user_id}/cap`, { monthly_cap: raw === "" ? null : Number(raw) });
        say(status, done.ok ? `Cap of ${m.username} saved.` : errorMessage(done), done.ok ? "ok" : "error");
        if (done.ok) showMembers(done.data.members);
      });
      capCell.replaceChildren(input, save);
      if (m.role !== "owner" && m.user_id !== undefined) {
        const remove = el("button", { type: "button", class: "button-small button-secondary", text: "Remove" });
        remove.addEventListener("click", async () => {
          const done = await api("DELETE", `${base}/members/${m.user_id}`);
          say(status, done.ok ? `${m.username} was removed.` : errorMessage(done), done.ok ? "ok" : "error");
          if (done.ok) loadMembers();
        });
        actions.append(remove);
      }
    }
    return el(
      "tr",
      { "data-member": m.username },
      el(
        "td",
        { "data-label": "Member" },
        el("strong", { text: m.username }),
        m.email ? el("span", { class: "muted small member-email", text: m.email }) : null,
      ),
      el("td", { "data-label": "Role", text: m.role }),
      el("td", { "data-label": "Used this period", class: "num", text: m.credits_used === null ? "—" : String(m.credits_used) }),
      capCell,
      actions,
    );
  }

  function showMembers(members) {
    $("[data-members-body]", root).replaceChildren(...members.map(memberRow));
    const select = $("#transfer-to", root);
    if (select) {
      const others = members.filter((m) => m.role !== "owner");
      select.replaceChildren(...others.map((m) => el("option", { value: m.user_id, text: m.username })));
      // No one to hand the team to: a sentence instead of an empty list.
      const form = $("[data-transfer]", root);
      const none = $("[data-transfer-none]", root);
      if (me.role === "owner") {
        form.hidden = others.length === 0;
        none.hidden = others.length > 0;
      }
    }
  }

  async function loadMembers() {
    const result = await api("GET", `${base}/members`);
    if (result.ok) showMembers(result.data.members);
  }

  async function loadInvitations() {
    const list = $("[data-invitations]", root);
    if (!list || (me.role !== "owner" && me.role !== "admin")) return;
    const result = await api("GET", `${base}/invitations`);
    if (!result.ok) return;
    list.replaceChildren(
      ...result.data.invitations.map((inv) => {
        const revoke = el("button", { type: "button", class: "button-small button-secondary", text: "Revoke" });
        revoke.addEventListener("click", async () => {
          const done = await api("DELETE", `${base}/invitations/${inv.id}`);
          say(status, done.ok ? `The invitation to ${inv.email} was revoked.` : errorMessage(done), done.ok ? "ok" : "error");
          loadInvitations();
        });
        return el("li", { class: "invitation" }, el("span", { text: `${inv.email} (${inv.role}, expires ${shortDate(inv.expires_at)})` }), revoke);
      }),
    );
    $("[data-invitations-empty]", root).hidden = result.data.invitations.length > 0;
  }

  async function loadUsage() {
    const result = await api("GET", `${base}/usage/stats`);
    if (!result.ok) return;
    const admin = me.role === "owner" || me.role === "admin";
    $("[data-usage-scope]", root).textContent = admin
      ? `Every member's use of the pool this period (${plural(result.data.credits_used_this_month, "credit")} in all).`
      : "Your own use of the pool; admins see everyone's.";
    $("[data-usage-body]", root).replaceChildren(
      ...result.data.members.map((m) =>
        el(
          "tr",
          { "data-usage-member": m.username },
          el("td", { "data-label": "Member", text: m.username }),
          el("td", { "data-label": "Credits this period", class: "num", text: String(m.credits_used) }),
          el("td", {
            "data-label": "Actions per tool",
            text: m.tool_usage_breakdown.map((t) => `${actionLabel(t.tool)}: ${t.count}`).join(", ") || "None yet",
          }),
        ),
      ),
    );
  }

  async function loadTiers() {
    const select = $("[data-tier-options]", root);
    if (!select || me.role !== "owner") return;
    const result = await api("GET", `${base}/subscription`);
    if (!result.ok) return;
    select.replaceChildren(
      ...result.data.available_tiers.map((t) =>
        el("option", { value: t.id, text: `${t.display_name} · ${plural(t.monthly_credits, "credit")} a month`, selected: t.id === result.data.subscription.tier.id }),
      ),
    );
  }

  function onSubmit(selector, handler) {
    const form = $(selector, root);
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const result = await handler(formValues(form), form);
      if (result && !result.ok) showErrors(form, result);
    });
  }

  onSubmit("[data-invite]", async (values) => {
    const result = await api("POST", `${base}/invitations`, { email: values.email.trim(), role: values.role });
    if (result.ok) {
      const box = $("[data-invite-link]", root);
      box.hidden = false;
      $("[data-invite-url]", root).textContent = result.data.accept_url;
      loadInvitations();
    }
    return result;
  });
  onSubmit("[data-default-cap]", async (values) => {
    const raw = String(values.monthly_cap ?? "").trim();
    const result = await api("PUT", `${base}/default-cap`, { monthly_cap: raw === "" ? null : Number(raw) });
    if (result.ok) {
      showPool(result.data.organization);
      say(status, "Default cap saved.");
      loadMembers();
    }
    return result;
  });
  onSubmit("[data-org-upgrade]", async (values) => {
    const result = await api("POST", `${base}/subscription/upgrade`, { tier_id: Number(values.tier_id) });
    if (result.ok && result.data.checkout_url) {
      window.location.assign(result.data.checkout_url); // Stripe Checkout; the webhook changes the plan
    } else if (result.ok) {
      say(status, result.data.message);
      refreshPool();
    }
    return result;
  });
  onSubmit("[data-org-pack]", async (values) => {
    const result = await api("POST", `${base}/credits/purchase`, { pack_size: Number(values.pack_size) });
    if (result.ok && result.data.checkout_url) {
      window.location.assign(result.data.checkout_url); // Stripe Checkout; the webhook credits the pool
    } else if (result.ok) {
      say(status, `Bought ${plural(result.data.purchase.credits_amount, "credit")} for the team.`);
      refreshPool();
    }
    return result;
  });
  $("[data-org-portal]", root)?.addEventListener("click", async () => {
    const result = await api("POST", `${base}/billing/portal`);
    if (result.ok) window.location.assign(result.data.url);
    else say(status, errorMessage(result), "error");
  });

  async function loadSeats() {
    if (me.role !== "owner" && me.role !== "admin") return;
    const result = await api("GET", `${base}/billing`);
    if (!result.ok) return;
    const seats = result.data.seats;
    const held = seats.pending_invitations ? ` (+${seats.pending_invitations} invited)` : "";
    $("[data-seats-used]", root).textContent = `${seats.members}${held}`;
    $("[data-seats-included]", root).textContent = seats.included === null ? "No limit" : String(seats.included);
    $("[data-seats-extra]", root).textContent = seats.extra_seat_price === null
      ? (seats.extra_seats ? String(seats.extra_seats) : "Not sold on this plan")
      : `${seats.extra_seats} at $${seats.extra_seat_price}/month`;
    $("[data-billing-members]", root).replaceChildren(
      ...result.data.members.map((m) =>
        el(
          "tr",
          { "data-billing-member": m.username },
          el("td", { text: m.username }),
          el("td", { text: m.role }),
          el("td", { class: "num", text: String(m.credits_used) }),
          el("td", { class: "num", text: capText(m.cap) }),
        ),
      ),
    );
  }

  async function showPaymentsMode() {
    const result = await api("GET", `${base}/subscription`);
    if (!result.ok) return;
    for (const node of $$("[data-stripe-only]", root)) node.hidden = me.role !== "owner" || result.data.payments_mode !== "stripe";
    const checkout = new URLSearchParams(window.location.search).get("checkout");
    if (checkout === "success") say(status, "Stripe has your payment: the team's credits arrive as soon as Stripe confirms it.");
    if (checkout === "cancelled") say(status, "The payment was cancelled; nothing was charged.", "error");
  }
  onSubmit("[data-transfer]", async (values) => {
    const result = await api("POST", `${base}/transfer`, { user_id: Number(values.user_id) });
    if (result.ok) window.location.reload();
    return result;
  });
  const leave = $("[data-leave]", root);
  leave?.addEventListener("click", async () => {
    const me_ = await api("GET", "/api/auth/me");
    if (!me_.ok) return;
    const done = await api("DELETE", `${base}/members/${me_.data.user.id}`);
    if (done.ok) window.location.assign("/orgs");
    else say(status, errorMessage(done), "error");
  });
  const del = $("[data-delete]", root);
  del?.addEventListener("click", async () => {
    if (!window.confirm("Delete this organization, its pool and its history?")) return;
    const done = await api("DELETE", base);
    if (done.ok) window.location.assign("/orgs");
    else say(status, errorMessage(done), "error");
  });

  showPool(detail.data.organization);
  await Promise.all([loadMembers(), loadInvitations(), loadUsage(), loadTiers(), loadSeats(), showPaymentsMode()]);
}

// --- the billing page's team pools, the admin dashboard's organizations --------------

async function billingTeams(root) {
  const result = await api("GET", "/api/orgs");
  if (!result.ok || !result.data.organizations.length) return;
  const details = await Promise.all(result.data.organizations.map((org) => api("GET", `/api/orgs/${org.id}`)));
  $("[data-billing-teams-list]", root).replaceChildren(
    ...details
      .filter((d) => d.ok)
      .map(({ data: { organization: org } }) =>
        el(
          "li",
          {},
          el("a", { href: `/orgs/${org.id}`, text: org.name }),
          ` · ${org.tier.display_name} · ${plural(org.credits_remaining, "credit")} in the pool · you: ${org.role}`,
        ),
      ),
  );
  root.hidden = false;
}

async function adminOrgs(root) {
  const result = await api("GET", "/api/admin/organizations");
  if (!result.ok) {
    $("[data-admin-orgs-total]", root).textContent = errorMessage(result);
    return;
  }
  showOrgGrantForm(root, result.data.organizations);
  $("[data-admin-orgs-total]", root).textContent = `${result.data.total} organizations, newest first.`;
  $("[data-admin-orgs-rows]", root).replaceChildren(
    ...result.data.organizations.map((org) =>
      el(
        "tr",
        {},
        el("td", { text: org.name }),
        el("td", { text: org.owner_username }),
        el("td", { class: "num", text: String(org.member_count) }),
        el("td", { text: org.tier }),
        el("td", { class: "num", text: String(org.credits_remaining) }),
        el("td", { class: "num", text: String(org.credits_used_this_month) }),
      ),
    ),
  );
}

/** The form that gives a team's pool promotional credits (POST /api/admin/orgs/{id}/grants). */
function showOrgGrantForm(root, organizations) {
  const form = $("[data-org-grant-form]", root);
  form.hidden = organizations.length === 0;
  $("[data-org-grant-options]", form).replaceChildren(
    ...organizations.map((org) => el("option", { value: org.id, text: `${org.name} (${org.owner_username})` })),
  );
  form.onsubmit = async (event) => {
    event.preventDefault();
    const select = $("[data-org-grant-options]", form);
    const team = select.selectedOptions[0].textContent;
    const said = await submitGrant(form, `/api/admin/orgs/${select.value}/grants`, team);
    if (!said) return;
    form.reset();
    $("[data-org-grant-result]", form).textContent = said;
    await adminOrgs(root);
  };
}

const orgRoot = $("[data-org]");
const joinRoot = $("[data-join]");
if (orgRoot) orgPage(orgRoot);
else if (joinRoot) joinPage(joinRoot);
else if ($("[data-orgs-list]")) listPage();
const teamsRoot = $("[data-billing-teams]");
if (teamsRoot) billingTeams(teamsRoot);
const adminRoot = $("[data-admin-orgs]");
if (adminRoot) adminOrgs(adminRoot);
