// The billing page: balance with its progress bar, tier badge, "used X of Y this
// month", next reset, the tier cards' buttons and the packs. Everything updates in
// place from the API's answers after a purchase or a plan change (no reload); in
// Stripe mode the answer is a checkout_url and the browser goes to Checkout.
import { api, errorMessage, loadSubscription, plural, setBalances, setCredits, shortDate, usd } from "./common.js";

const $ = (selector) => document.querySelector(selector);
const status = $("[data-billing-status]");
let tiers = []; // available tiers from the API (they carry the ids the upgrade needs)
let current = null; // the Subscription object last shown

/**
 * Tell the customer how an action went. With `near` (the button pressed) the sentence
 * appears right under that button, where they are looking; else at the top of the page.
 */
function say(message, kind = "ok", near = null) {
  const slot = near && near.closest(".card") && near.closest(".card").querySelector("[data-card-status]");
  if (slot) {
    for (const other of document.querySelectorAll("[data-card-status]")) if (other !== slot) other.textContent = "";
    slot.dataset.kind = kind;
    slot.textContent = message;
    return;
  }
  status.className = `alert alert-${kind}`;
  status.textContent = message;
  if (message) status.focus({ preventScroll: true });
}

// --- the confirmation dialog -----------------------------------------------------------

const dialog = $("[data-confirm]");

/** Ask before spending: resolves true when the customer confirms. */
function confirmAction({ title, summary, facts = [], note = "", yes }) {
  dialog.querySelector("[data-confirm-title]").textContent = title;
  dialog.querySelector("[data-confirm-summary]").textContent = summary;
  dialog.querySelector("[data-confirm-facts]").replaceChildren(
    ...facts.flatMap(([term, value]) => {
      const wrap = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      wrap.append(dt, dd);
      return [wrap];
    }),
  );
  dialog.querySelector("[data-confirm-note]").textContent = note;
  const yesButton = dialog.querySelector("[data-confirm-yes]");
  const noButton = dialog.querySelector("[data-confirm-no]");
  yesButton.textContent = yes;
  return new Promise((resolve) => {
    const done = (answer) => {
      yesButton.onclick = noButton.onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    yesButton.onclick = () => done(true);
    noButton.onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
    yesButton.focus();
  });
}

function rank(tier) {
  return [Number(tier.monthly_price), tier.monthly_credits];
}

function isUpgrade(from, to) {
  const [a, b] = [rank(from), rank(to)];
  return b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]);
}

function renderBalance(sub) {
  // This month's credits: what was used since the last monthly reset (a plan change is
  // not a reset) and what is left; pack credits and promotional credits sit beside them.
  const left = sub.monthly_credits_remaining;
  const used = sub.credits_used_this_month;
  const month = used + left;
  const purchased = sub.purchased_credits_remaining;
  const promotional = sub.promotional_credits_remaining;
  const whole = month + purchased + promotional;
  const pct = (n) => (whole > 0 ? `${(100 * n) / whole}%` : "0%");
  $("[data-tier-badge]").textContent = `${sub.tier.display_name} plan`;
  $("[data-balance-total]").textContent = String(sub.credits_remaining);
  $("[data-meter-used]").style.width = pct(used);
  $("[data-meter-left]").style.width = pct(left);
  $("[data-meter-purchased]").style.width = pct(purchased);
  $("[data-meter-promotional]").style.width = pct(promotional);
  const meter = $("[data-meter]");
  meter.setAttribute("aria-valuemax", String(month));
  meter.setAttribute("aria-valuenow", String(used));
  meter.setAttribute(
    "aria-valuetext",
    `${used} of ${month} monthly credits used, ${left} left until ${shortDate(sub.current_period_end)}; ${plural(purchased, "purchased credit")} that never expire` +
      (promotional ? `; ${plural(promotional, "promotional credit")}` : ""),
  );
  $("[data-usage-line]").textContent = `Used ${used} of ${month} this month`;
  $("[data-monthly-used]").textContent = String(used);
  $("[data-monthly-left]").textContent = String(left);
  $("[data-monthly-reset]").textContent = `(until ${shortDate(sub.current_period_end)})`;
  $("[data-purchased-legend]").textContent = String(purchased);
  $("[data-purchased]").textContent = String(purchased);
  $("[data-promotional]").textContent = String(promotional);
  $("[data-promotional-fact]").hidden = !promotional;
  $("[data-promotional-legend]").textContent = String(promotional);
  $("[data-promotional-legend-item]").hidden = !promotional;
  $("[data-next-reset]").textContent = shortDate(sub.current_period_end);
  $("[data-total-used]").textContent = String(sub.total_credits_used);
  $("[data-payment-status]").textContent = sub.payment_status.replace("_", " ");
  const scheduled = $("[data-scheduled]");
  if (sub.cancel_at_period_end) {
    scheduled.textContent = `Your ${sub.tier.display_name} plan ends on ${shortDate(sub.current_period_end)}; then you move to Free.`;
  } else if (sub.scheduled_tier) {
    scheduled.textContent = `You move to ${sub.scheduled_tier.display_name} on ${shortDate(sub.current_period_end)}.`;
  }
  scheduled.hidden = !(sub.cancel_at_period_end || sub.scheduled_tier);
  setBalances(sub);
}

/** Label and action of one tier card's button, given the current subscription. */
function tierAction(tier, sub) {
  const scheduledId = sub.scheduled_tier ? sub.scheduled_tier.id : null;
  if (tier.id === sub.tier.id) {
    if (scheduledId !== null) return { label: `Keep ${tier.display_name}`, run: (b) => changePlan(tier, b) };
    return null;
  }
  if (tier.id === scheduledId) return { note: `Starts on ${shortDate(sub.current_period_end)}` };
  if (isUpgrade(sub.tier, tier)) return { label: `Upgrade to ${tier.display_name}`, run: (b) => changePlan(tier, b) };
  if (tier.name === "free") return { label: "Cancel plan", danger: true, run: (b) => cancelPlan(tier, b) };
  return { label: `Downgrade to ${tier.display_name}`, secondary: true, run: (b) => changePlan(tier, b) };
}

function renderTiers(sub) {
  for (const card of document.querySelectorAll("[data-tier-name]")) {
    const tier = tiers.find((t) => t.name === card.dataset.tierName);
    const button = card.querySelector("[data-tier-action]");
    const note = card.querySelector("[data-tier-note]");
    const isCurrent = Boolean(tier) && tier.id === sub.tier.id;
    card.dataset.current = String(isCurrent);
    card.querySelector("[data-current-badge]").hidden = !isCurrent;
    const action = tier ? tierAction(tier, sub) : null;
    note.hidden = !(action && action.note);
    note.textContent = (action && action.note) || "";
    button.hidden = !(action && action.label);
    if (action && action.label) {
      button.textContent = action.label;
      button.className = action.danger ? "button-danger" : action.secondary ? "button-secondary" : "";
      button.onclick = () => busy(button, () => action.run(button));
    }
  }
}

function render(sub) {
  current = sub;
  renderBalance(sub);
  renderTiers(sub);
}

/** Show a changed subscription and tell other parts of the page (e.g. the usage charts, whose plan gate may open). */
function changed(sub) {
  render(sub);
  document.dispatchEvent(new CustomEvent("subscription:changed", { detail: { subscription: sub } }));
}

/** Disable a button while its request runs, so a double click cannot send twice. */
async function busy(button, run) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await run();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function idempotencyKey() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

async function refresh() {
  const result = await loadSubscription(true);
  if (!result.ok) {
    say(errorMessage(result), "error");
    return;
  }
  tiers = result.data.available_tiers;
  render(result.data.subscription);
}

/** The preview of a move to `tier` as the dialog's facts, or null (the error is said near `button`). */
async function previewFacts(tier, button) {
  const result = await api("POST", "/api/subscription/preview", { tier_id: tier.id });
  if (!result.ok) {
    say(errorMessage(result), "error", button);
    return null;
  }
  const p = result.data;
  const now = p.effective_at <= new Date().toISOString() || p.amount_due_now > 0;
  const facts = [
    ["Due now", p.amount_due_now > 0 ? usd(p.amount_due_now) : "Nothing"],
    ["Takes effect", now ? "At once" : shortDate(p.effective_at)],
    ["Your credits then", plural(p.credits_after, "credit")],
  ];
  if (p.monthly_credits_lost > 0) facts.push(["Monthly credits replaced", plural(p.monthly_credits_lost, "credit")]);
  facts.push(["Next renewal", shortDate(p.next_renewal)]);
  return { preview: p, facts };
}

async function changePlan(tier, button) {
  const found = await previewFacts(tier, button);
  if (!found) return;
  const { preview, facts } = found;
  const upgrade = isUpgrade(current.tier, tier);
  const keep = tier.id === current.tier.id;
  const lost = preview.monthly_credits_lost;
  const ok = await confirmAction({
    title: keep ? `Keep ${tier.display_name}?` : `${upgrade ? "Upgrade" : "Downgrade"} to ${tier.display_name}?`,
    summary: keep
      ? `The scheduled change is cancelled; you stay on ${tier.display_name}.`
      : upgrade
        ? `${tier.display_name} starts at once with ${plural(tier.monthly_credits, "credit")} a month.`
        : `You keep ${current.tier.display_name} until ${shortDate(preview.effective_at)}, then move to ${tier.display_name}.`,
    facts,
    note: lost > 0
      ? `Your ${plural(lost, "monthly credit")} left on ${current.tier.display_name} are replaced by ${tier.display_name}'s. Purchased credits are kept.`
      : "Purchased credits are always kept.",
    yes: keep ? `Keep ${tier.display_name}` : upgrade ? `Upgrade to ${tier.display_name}` : `Downgrade to ${tier.display_name}`,
  });
  if (!ok) return;
  const result = await api("POST", "/api/subscription/upgrade", { tier_id: tier.id }, { "Idempotency-Key": idempotencyKey() });
  if (!result.ok) return say(errorMessage(result), "error", button);
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  changed(result.data.subscription);
  // The card re-rendered: speak next to the card the customer used.
  say(result.data.message || `You are now on ${result.data.subscription.tier.display_name}.`, "ok", button);
}

async function cancelPlan(tier, button) {
  const found = await previewFacts(tier, button);
  if (!found) return;
  const ok = await confirmAction({
    title: `Cancel your ${current.tier.display_name} plan?`,
    summary: `You keep ${current.tier.display_name} until ${shortDate(current.current_period_end)}, then move to Free.`,
    facts: found.facts,
    note: "Purchased credits are kept.",
    yes: "Cancel plan",
  });
  if (!ok) return;
  const result = await api("POST", "/api/subscription/cancel");
  if (!result.ok) return say(errorMessage(result), "error", button);
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  changed(result.data.subscription);
  say(result.data.message || "Your plan is cancelled at the end of the period.", "ok", button);
}

async function buyPack(size, price, button) {
  const after = (current ? current.credits_remaining : 0) + size;
  const ok = await confirmAction({
    title: `Buy ${plural(size, "credit")}?`,
    summary: `${plural(size, "credit")} for ${usd(price)}, added to your balance at once. Pack credits never expire.`,
    facts: [
      ["Price", usd(price)],
      ["Your balance after", plural(after, "credit")],
    ],
    note: document.querySelector("[data-demo-note]") ? "Demo mode: no money is taken." : "You pay on Stripe's secure page.",
    yes: `Buy for ${usd(price)}`,
  });
  if (!ok) return;
  const result = await api("POST", "/api/credits/purchase", { pack_size: size }, { "Idempotency-Key": idempotencyKey() });
  if (!result.ok) return say(errorMessage(result), "error", button);
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  const credits = result.data.purchase.credits_amount;
  setCredits(result.data.credits_remaining);
  $("[data-balance-total]").textContent = String(result.data.credits_remaining);
  say(`Added ${plural(credits, "credit")}. You now have ${plural(result.data.credits_remaining, "credit")}.`, "ok", button);
  await refresh();
  if (current) changed(current);
}

for (const button of document.querySelectorAll("[data-pack-buy]")) {
  button.addEventListener("click", () =>
    busy(button, () => buyPack(Number(button.dataset.packBuy), Number(button.dataset.packPrice), button)),
  );
}

// Stripe mode: the Customer Portal (cards, invoices) is one button away.
const portal = $("[data-portal]");
portal?.addEventListener("click", () =>
  busy(portal, async () => {
    const result = await api("POST", "/api/stripe/portal");
    if (!result.ok) return say(errorMessage(result), "error");
    window.location.assign(result.data.url);
  }),
);

// Back from Stripe Checkout: the webhook, not this redirect, grants what was paid for,
// so the page looks again a few times until the balance or the plan changes.
const CONFIRM_POLLS = 10;
const CONFIRM_EVERY_MS = 3000;

function fingerprint(sub) {
  return `${sub.credits_remaining}/${sub.purchased_credits_remaining}/${sub.tier.id}/${sub.payment_status}`;
}

async function awaitConfirmation() {
  say("Thank you! Your payment is being confirmed; your credits appear here as soon as Stripe confirms it.");
  const before = current && fingerprint(current);
  for (let i = 0; i < CONFIRM_POLLS; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, CONFIRM_EVERY_MS));
    await refresh();
    if (current && fingerprint(current) !== before) {
      changed(current);
      say(`Payment confirmed. You now have ${plural(current.credits_remaining, "credit")} on the ${current.tier.display_name} plan.`);
      return;
    }
  }
}

const checkout = new URLSearchParams(window.location.search).get("checkout");
if (checkout) history.replaceState(null, "", "/billing"); // a reload must not replay the message
await refresh();
if (checkout === "success") {
  awaitConfirmation();
} else if (checkout === "cancel" || checkout === "cancelled") {
  say("Checkout was cancelled; nothing was charged.", "warn");
}
