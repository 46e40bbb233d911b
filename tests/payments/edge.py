"""Stripe at the network edge: localstripe, plus a small HTTP server for what localstripe lacks.

``localstripe`` (a Stripe emulator from PyPI) answers customers, payment methods,
PaymentIntents, refunds, plans and subscriptions. It predates Prices, Checkout
Sessions and the Customer Portal, so ``Edge`` (a ``ThreadingHTTPServer`` on a free
loopback port, the ``STRIPE_API_BASE`` our code talks to) answers those few calls
itself and forwards everything else to localstripe unchanged, except that on
subscription calls it renames ``price`` to ``plan`` (a recurring Price made here is
also made as a localstripe Plan with the same id) and drops the parameters
localstripe does not know (``proration_behavior``, ``billing_cycle_anchor``). Every
request is recorded (path, parameters, idempotency key) for the tests to inspect.

``pay_checkout`` plays the customer on Stripe's hosted page: it pays a session with
a test card through the real SDK against localstripe.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import stripe

SECRET_KEY = "sk_test_devops_agent_local"
WEBHOOK_SECRET = "whsec_devops_agent_test"
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_localstripe(port: int) -> subprocess.Popen[bytes]:
    """Start ``localstripe`` on ``port`` and wait until it answers (or fail after 30 s)."""
    exe = Path(sys.executable).with_name("localstripe")
    proc = subprocess.Popen(
        [str(exe), "--port", str(port), "--from-scratch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/balance", auth=(SECRET_KEY, ""), timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("localstripe did not start") from None
            time.sleep(0.05)  # readiness poll of a subprocess, not a timing assumption


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back to nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return dict(lists(root))


def flatten(params: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            out += flatten(value, name)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out += flatten(item, f"{name}[{i}]")
                else:
                    out.append((f"{name}[{i}]", str(item)))
        else:
            out.append((name, str(value)))
    return out


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class Edge:
    upstream: str
    port: int = 0
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Edge:
        edge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                params = unflatten(parse_qsl(raw.decode() if raw else query, keep_blank_values=True))
                key = self.headers.get("Idempotency-Key")
                edge.requests.append(Recorded(self.command, path, params, key))
                status, body = edge.route(self.command, path, params, key, raw, query, dict(self.headers))
                self._answer(status, body)

            do_GET = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- routing ------------------------------------------------------------------------

    def route(
        self, method: str, path: str, params: dict[str, Any], key: str | None, raw: bytes, query: str, headers: Any
    ) -> tuple[int, Any]:
        if method == "POST" and key and f"{path}:{key}" in self._by_key:
            return 200, self._by_key[f"{path}:{key}"]  # Stripe's idempotency: the first answer again
        status, body = self._route(method, path, params, raw, query, headers)
        if method == "POST" and key and status == 200:
            self._by_key[f"{path}:{key}"] = body
        return status, body

    def _route(
        self, method: str, path: str, params: dict[str, Any], raw: bytes, query: str, headers: Any
    ) -> tuple[int, Any]:
        if path == "/v1/prices" and method == "POST":
            return 200, self._create_price(params, headers)
        if path.startswith("/v1/prices/") and method == "GET":
            return 200, self.prices[path.rsplit("/", 1)[1]]
        if path == "/v1/checkout/sessions" and method == "POST":
            return 200, self._create_session(params)
        if path.startswith("/v1/checkout/sessions/") and method == "GET":
            return 200, self.sessions[path.rsplit("/", 1)[1]]
        if path == "/v1/billing_portal/sessions" and method == "POST":
            n = next(_ids)
            return 200, {
                "id": f"bps_{n}",
                "object": "billing_portal.session",
                "customer": params["customer"],
                "return_url": params.get("return_url"),
                "url": f"{self.url}/portal/{n}",
            }
        if path == "/v1/invoices/create_preview" and method == "POST":
            return self._preview_invoice(params, headers)
        if path.startswith("/v1/subscriptions") and method == "POST":
            params = _for_localstripe_subscription(params)
            raw = urlencode(flatten(params)).encode()
        return self._forward(method, path, raw, query, headers)

    def _forward(self, method: str, path: str, raw: bytes, query: str, headers: Any) -> tuple[int, Any]:
        response = httpx.request(
            method,
            f"{self.upstream}{path}" + (f"?{query}" if query else ""),
            content=raw or None,
            headers={
                "Authorization": headers.get("Authorization", ""),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=10,
        )
        return response.status_code, response.json()

    def _create_price(self, params: dict[str, Any], headers: Any) -> dict[str, Any]:
        price_id = f"price_{next(_ids)}"
        price = {
            "id": price_id,
            "object": "price",
            "product": params["product"],
            "currency": params["currency"],
            "unit_amount": int(params["unit_amount"]),
            "recurring": params.get("recurring"),
            "metadata": params.get("metadata", {}),
            "active": True,
        }
        if params.get("recurring"):
            plan = {
                "id": price_id,
                "product": params["product"],
                "amount": params["unit_amount"],
                "currency": params["currency"],
                "interval": params["recurring"]["interval"],
            }
            status, body = self._forward("POST", "/v1/plans", urlencode(flatten(plan)).encode(), "", headers)
            assert status == 200, body
        self.prices[price_id] = price
        return price

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = f"cs_test_{next(_ids)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": params["mode"],
            "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "line_items_sent": params.get("line_items", []),
            "subscription_data": params.get("subscription_data", {}),
            "payment_intent_data": params.get("payment_intent_data", {}),
            "payment_status": "unpaid",
            "status": "open",
            "payment_intent": None,
            "subscription": None,
            "success_url": params.get("success_url"),
            "url": f"{self.url}/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return session

    def _preview_invoice(self, params: dict[str, Any], headers: Any) -> tuple[int, Any]:
        """Stripe's upcoming-invoice preview of a price change, which localstripe lacks.

        With ``proration_behavior=always_invoice`` and ``billing_cycle_anchor=now`` (what
        an upgrade sends) the invoice credits the unused part of the current period at the
        old price and charges a full period at the new one, as Stripe does.
        """
        status, subscription = self._forward("GET", f"/v1/subscriptions/{params['subscription']}", b"", "", headers)
        if status != 200:
            return status, subscription
        details = params.get("subscription_details", {})
        new_price = self.prices[details["items"][0]["price"]]
        old_amount = int(subscription["items"]["data"][0]["plan"]["amount"])
        start, end = int(subscription["current_period_start"]), int(subscription["current_period_end"])
        now = min(max(int(time.time()), start), end)
        unused = round(old_amount * (end - now) / (end - start)) if end > start else 0
        lines = [
            {"amount": -unused, "description": "Unused time", "proration": True},
            {"amount": int(new_price["unit_amount"]), "description": "New plan", "proration": False},
        ]
        if details.get("proration_behavior") == "none":
            lines = lines[1:]
        total = sum(line["amount"] for line in lines)
        return 200, {
            "id": f"upcoming_in_{next(_ids)}",
            "object": "invoice",
            "customer": params.get("customer"),
            "subscription": params["subscription"],
            "currency": new_price["currency"],
            "amount_due": max(total, 0),
            "total": total,
            "lines": {"object": "list", "data": lines},
        }

    def amount_of(self, session: dict[str, Any]) -> int:
        item = session["line_items_sent"][0]
        if "price" in item:
            return int(self.prices[item["price"]]["unit_amount"])
        return int(item["price_data"]["unit_amount"])

    def forget_keys(self) -> None:
        self._by_key.clear()

    def posted(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]


def _for_localstripe_subscription(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k not in ("proration_behavior", "billing_cycle_anchor")}
    if "items" in out:
        out["items"] = [{("plan" if k == "price" else k): v for k, v in item.items()} for item in out["items"]]
    return out


def sdk(base: str) -> stripe.StripeClient:
    """The real SDK (synchronous) pointed at a local server, as the test's 'customer' uses it."""
    return stripe.StripeClient(
        SECRET_KEY,
        base_addresses={"api": base},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )


def card(client: stripe.StripeClient, customer: str, number: str = "4242424242424242") -> str:
    """A card payment method attached to ``customer`` (localstripe test numbers)."""
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}  # type: ignore[typeddict-item]
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    return str(pm.id)


def pay_checkout(edge: Edge, session_id: str, *, number: str = "4242424242424242") -> dict[str, Any]:
    """Pay a Checkout Session as the customer would: a card, then the payment or the subscription."""
    client = sdk(edge.url)
    session = edge.sessions[session_id]
    customer = session["customer"]
    pm = card(client, customer, number)
    if session["mode"] == "payment":
        intent = client.v1.payment_intents.create(
            params={
                "amount": edge.amount_of(session),
                "currency": "usd",
                "customer": customer,
                "payment_method": pm,
                "confirm": True,
                "metadata": session["payment_intent_data"].get("metadata", {}),
            }
        )
        session.update(payment_intent=intent.id, payment_status="paid", status="complete")
    else:
        client.v1.customers.update(customer, params={"invoice_settings": {"default_payment_method": pm}})
        price = session["line_items_sent"][0]["price"]
        sub = client.v1.subscriptions.create(
            params={
                "customer": customer,
                "items": [{"price": price}],
                "metadata": session["subscription_data"].get("metadata", {}),
            }
        )
        session.update(subscription=sub.id, payment_status="paid", status="complete")
    return dict(session)


@contextmanager
def running_edge() -> Iterator[Edge]:
    """localstripe on a free port with the edge server in front of it, until the block ends."""
    port = free_port()
    proc = start_localstripe(port)
    server = Edge(upstream=f"http://127.0.0.1:{port}").start()
    try:
        yield server
    finally:
        server.stop()
        proc.terminate()
        proc.wait(timeout=10)
