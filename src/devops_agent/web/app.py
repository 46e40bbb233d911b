"""The FastAPI application factory.

``create_app()`` wires settings, the database, the clock and the payment gateway
into ``app.state``, installs the error mapping, the request log and the body-size
limit, and registers the routers. When it opens the database itself, the first
start migrates it and syncs the pricing catalog, so a fresh ``devops_agent.db``
is a working service.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devops_agent import notifications
from devops_agent.agent import turns
from devops_agent.agent.tools import check_catalog_tools
from devops_agent.billing.catalog import cached_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.billing.periods import utcnow
from devops_agent.config import Settings, get_settings
from devops_agent.db import Database
from devops_agent.migrate import take_startup_lock, upgrade
from devops_agent.payments.gateway import get_gateway
from devops_agent.users import Passwords
from devops_agent.web.api.subscription import TierCache
from devops_agent.web.errors import error_body, install_error_handlers
from devops_agent.web.instrumentation import sample_pools_forever
from devops_agent.web.logging import RequestLogMiddleware, configure_logging
from devops_agent.web.ratelimit import LoginLimiter, RegistrationLimiter
from devops_agent.web.security import SessionSigner, load_secret_key

log = logging.getLogger("devops_agent.web")

MAX_BODY_BYTES = 1024 * 1024


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 JSON, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body("payload_too_large", f"The request body is larger than {self.max_bytes} bytes.")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            # Past the limit we answer 413 ourselves and tell the app the client went away,
            # so whatever it tries to send afterwards is dropped.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not refused:
                started = started or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """Build the app. Pass ``database`` (and a ``clock``) from tests; the app then neither

    migrates nor disposes it.
    """
    settings = settings or get_settings()
    owns_database = database is None
    db = database or Database(settings.database_url)
    configure_logging(settings.log_dir)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if owns_database:
            await upgrade(db)
            async with db.transaction() as session:
                await take_startup_lock(session)  # workers starting together sync in turn
                await sync_catalog(session, cached_catalog(settings.pricing_file))
        _app.state.notifier.start_periodic()  # retries of emails that failed for a while
        pool_sampler = asyncio.create_task(sample_pools_forever(db), name="metrics-pool-sampler")
        # Everything built so far (modules, the app, the catalog) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it, which
        # takes tens of milliseconds out of the slowest requests.
        gc.freeze()
        try:
            yield
        finally:
            pool_sampler.cancel()
            await _app.state.notifier.aclose()
            runtime = getattr(_app.state, "agent_runtime", None)  # built on the first chat
            if runtime is not None:
                await turns.wait_interrupted()  # chats cancelled past the grace period refund first
                await runtime.aclose()
            if owns_database:
                await db.dispose()

    app = FastAPI(
        title="DevOps Agent",
        version="0.1.0",
        description=(
            "Cloud chores through chat, paid for with credits. Authenticate with the session cookie "
            "set by `/api/auth/login` (browsers; state-changing requests need `X-CSRF-Token`) or with "
            "`Authorization: Bearer <api key>` (plans with API access). Errors are "
            '`{"error": code, "message": text}`.'
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.clock = clock or utcnow
    app.state.gateway = get_gateway(settings)
    app.state.catalog = cached_catalog(settings.pricing_file)
    check_catalog_tools(app.state.catalog)  # a misspelled tool in the pricing file stops the start
    app.state.passwords = Passwords()
    secret = load_secret_key(settings)
    app.state.sessions = SessionSigner(secret)
    app.state.login_limiter = LoginLimiter()
    app.state.registration_limiter = RegistrationLimiter(settings.registration_limit_per_hour)
    app.state.tier_cache = TierCache()
    app.state.notifier = notifications.install(db, notifications.Notifier.from_settings(db, settings, secret=secret))

    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(RequestLogMiddleware)

    import devops_agent.web.api.chat as agent_chat_api
    import devops_agent.web.api.templates as agent_templates_api
    from devops_agent.web import org_pages, pages
    from devops_agent.web.api import (
        admin,
        admin_revenue,
        admin_system,
        analytics,
        auth,
        credits,
        grants,
        health,
        keys,
        ledger,
        metrics,
        org_billing,
        org_pool,
        orgs,
        stripe,
        subscription,
        usage,
    )
    from devops_agent.web.api import cloud as cloud_api

    # --- routers: one per line; add yours here --------------------------------------
    # The chat first: requests are matched against routes in this order, and the chat is
    # the request made most often (its paths overlap no other router's).
    routers = (
        agent_chat_api.router,
        health.router,
        metrics.router,
        auth.router,
        auth.account_router,
        keys.router,
        subscription.router,
        credits.router,
        ledger.router,
        grants.router,
        usage.router,
        admin.router,
        admin_revenue.router,
        admin_system.router,
        grants.admin_router,
        analytics.router,
        admin_system.page_router,
        stripe.router,
        orgs.router,
        org_pool.router,
        org_billing.router,
        org_pages.router,
        agent_templates_api.router,
        cloud_api.router,
    )
    for router in routers:
        app.include_router(router)
    pages.install(app)  # HTML pages, /static, and 404/500 pages for browsers (wraps the JSON handlers)
    # --- end of routers -------------------------------------------------------------
    return app
