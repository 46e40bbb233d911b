// The billing page: balance with its progress bar, tier badge, "used X of Y this
// month", next reset, the tier cards' buttons and the packs. Everything updates in
// place from the API's answers after a purchase or a plan change (no reload); in
// Stripe mode the answer is a checkout_url and the browser goes to Checkout.
import { api, errorMessage, loadSubscription, setCredits, shortDate } from "./common.js";

const $ = (selector) => document.querySelector(selector);
const status = $("[data-billing-status]");
let tiers = []; // available tiers from the API (they carry the ids the upgrade needs)
let current = null; // the Subscription object last shown

function say(message, kind = "ok") {
  status.className = `alert alert-${kind}`;
  status.textContent = message;
  if (message) status.focus({ preventScroll: true });
}

function rank(tier) {
  return [Number(tier.monthly_price), tier.monthly_credits];
}

function isUpgrade(from, to) {
  const [a, b] = [rank(from), rank(to)];
  return b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]);
}

function renderBalance(sub) {
  const allowance = sub.tier.monthly_credits;
  const left = Math.min(sub.monthly_credits_remaining, allowance);
  const used = Math.max(allowance - left, 0);
  const pct = (n) => (allowance > 0 ? `${(100 * n) / allowance}%` : "0%");
  $("[data-tier-badge]").textContent = `${sub.tier.display_name} plan`;
  $("[data-balance-total]").textContent = String(sub.credits_remaining);
  $("[data-meter-used]").style.width = pct(used);
  $("[data-meter-left]").style.width = pct(left);
  const meter = $("[data-meter]");
  meter.setAttribute("aria-valuemax", String(allowance));
  meter.setAttribute("aria-valuenow", String(used));
  meter.setAttribute(
    "aria-valuetext",
    `${used} of ${allowance} monthly credits used, ${left} left; ${sub.purchased_credits_remaining} purchased credits apart`,
  );
  $("[data-usage-line]").textContent = `Used ${sub.credits_used_this_month} of ${allowance} this month`;
  $("[data-monthly-used]").textContent = String(used);
  $("[data-monthly-left]").textContent = String(left);
  $("[data-purchased]").textContent = String(sub.purchased_credits_remaining);
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
  setCredits(sub.credits_remaining);
}

/** Label and action of one tier card's button, given the current subscription. */
function tierAction(tier, sub) {
  const scheduledId = sub.scheduled_tier ? sub.scheduled_tier.id : null;
  if (tier.id === sub.tier.id) {
    if (scheduledId !== null) return { label: `Keep ${tier.display_name}`, run: () => changePlan(tier) };
    return null;
  }
  if (tier.id === scheduledId) return { note: `Starts on ${shortDate(sub.current_period_end)}` };
  if (isUpgrade(sub.tier, tier)) return { label: `Upgrade to ${tier.display_name}`, run: () => changePlan(tier) };
  if (tier.name === "free") return { label: "Cancel plan", danger: true, run: () => cancelPlan() };
  return { label: `Downgrade to ${tier.display_name}`, secondary: true, run: () => changePlan(tier) };
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
      button.onclick = () => busy(button, action.run);
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

async function changePlan(tier) {
  const result = await api("POST", "/api/subscription/upgrade", { tier_id: tier.id }, { "Idempotency-Key": idempotencyKey() });
  if (!result.ok) return say(errorMessage(result), "error");
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  changed(result.data.subscription);
  say(result.data.message || `You are now on ${result.data.subscription.tier.display_name}.`);
}

async function cancelPlan() {
  const confirmed = window.confirm(
    `Cancel your ${current.tier.display_name} plan? You keep it until ${shortDate(current.current_period_end)}, then move to Free. Purchased credits are kept.`,
  );
  if (!confirmed) return;
  const result = await api("POST", "/api/subscription/cancel");
  if (!result.ok) return say(errorMessage(result), "error");
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  changed(result.data.subscription);
  say(result.data.message || "Your plan is cancelled at the end of the period.");
}

async function buyPack(size) {
  const result = await api("POST", "/api/credits/purchase", { pack_size: size }, { "Idempotency-Key": idempotencyKey() });
  if (!result.ok) return say(errorMessage(result), "error");
  if (result.data.checkout_url) return window.location.assign(result.data.checkout_url);
  const credits = result.data.purchase.credits_amount;
  setCredits(result.data.credits_remaining);
  $("[data-balance-total]").textContent = String(result.data.credits_remaining);
  say(`Added ${credits} credits. You now have ${result.data.credits_remaining} credits.`);
  await refresh();
  if (current) changed(current);
}

for (const button of document.querySelectorAll("[data-pack-buy]")) {
  button.addEventListener("click", () => busy(button, () => buyPack(Number(button.dataset.packBuy))));
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
      say(`Payment confirmed. You now have ${current.credits_remaining} credits on the ${current.tier.display_name} plan.`);
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
