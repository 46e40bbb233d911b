"""The HTML pages: server-rendered Jinja layouts that call the JSON API from small scripts.

The pages hold no business logic. They render what does not change while a page is
open (the layout, the signed-in user, the plans and packs of the pricing catalog)
and leave every balance to the page's script, which reads it from the same JSON API
that scripts use, so the browser and the API can never disagree about a number.

Other packages extend ``base.html`` (blocks ``title``, ``head``, ``content``,
``scripts``) and render through ``render_page`` so the layout gets its context.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from devops_agent.agent.cloud_accounts import PERMISSIONS_POLICY
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import User
from devops_agent.web import labels
from devops_agent.web.deps import (
    API_ACCESS,
    DatabaseDep,
    NowDep,
    OptionalUser,
    authenticate,
    user_has_feature,
)

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

log = logging.getLogger("devops_agent.web")

ERROR_TITLES = {
    404: ("Page not found", "There is no page at this address. It may have moved, or the link may be mistyped."),
    500: ("Something went wrong", "An error on our side stopped this page. It has been logged; please try again."),
}


def usd(amount: Decimal | float | int) -> str:
    """Show a price as USD: whole dollars without cents ("$19"), others with two decimals."""
    value = Decimal(str(amount))
    if value == value.to_integral_value():
        return f"${value:,.0f}"
    return f"${value:,.2f}"


def _layout_context(request: Request) -> dict[str, Any]:
    """What ``base.html`` needs on every page: whether money is taken (the footer says so),
    and the readable names of actions and ledger kinds the scripts show."""
    gateway = getattr(request.app.state, "gateway", None)
    return {
        "payments_mode": getattr(gateway, "mode", "demo"),
        "labels": {"actions": labels.ACTION_LABELS, "kinds": labels.KIND_LABELS},
    }


templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[_layout_context])
templates.env.filters["usd"] = usd
templates.env.filters["credits"] = lambda n: f"{n:,} credit" if n == 1 else f"{n:,} credits"

router = APIRouter(include_in_schema=False)


# Every script and stylesheet is a file under /static (no inline code, no CDN), so the
# pages can forbid everything else: an injected <script> would not run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render_page(
    request: Request, name: str, *, user: User | None, page: str = "", status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render a template that extends ``base.html``, with the pages' security headers."""
    return templates.TemplateResponse(
        request, name, {"user": user, "page": page, **context}, status_code=status_code, headers=PAGE_HEADERS
    )


def render_error_page(request: Request, status_code: int, *, user: User | None = None) -> HTMLResponse:
    """The 404/500 page in the site's look (the error handlers call this for non-API paths)."""
    title, message = ERROR_TITLES.get(status_code, ("Something went wrong", "The request could not be completed."))
    return render_page(request, "error.html", user=user, status_code=status_code, title=title, message=message)


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def _free_credits(catalog: Catalog) -> int:
    free = catalog.tier("free")
    return free.monthly_credits if free is not None else 0


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


# Characters a browser drops from a URL before reading it (C0 controls, DEL, and the
# C1 controls some parsers also strip), and the origin ``next`` is resolved against.
_URL_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_OUR_ORIGIN = "http://this-site.invalid"


def safe_next(value: str | None) -> str:
    """Where to go after login: ``value`` if it is a path on this site, else ``/chat``.

    Browsers strip tabs and newlines anywhere in a URL, spaces at its ends, and read a
    backslash as a slash, so ``/\t/evil.com`` or ``/\\evil.com`` would leave the site.
    ``value`` is cleaned the same way, resolved against our origin, and kept only when it
    stays there; what is returned is the resolved path (with its query and fragment), so
    the browser cannot read it differently.
    """
    if not value:
        return "/chat"
    cleaned = _URL_CONTROLS.sub("", value).strip(" ").replace("\\", "/")
    if not cleaned.startswith("/") or cleaned.startswith("//"):
        return "/chat"
    resolved = urlsplit(urljoin(_OUR_ORIGIN + "/", cleaned))
    if f"{resolved.scheme}://{resolved.netloc}" != _OUR_ORIGIN or not resolved.path.startswith("/"):
        return "/chat"
    path = urlunsplit(("", "", resolved.path, resolved.query, resolved.fragment))
    return path if not path.startswith("//") else "/chat"


@router.get("/")
async def home(request: Request, user: OptionalUser) -> Response:
    """Signed-in users go straight to the chat; everyone else sees what it is and what it costs."""
    if user is not None:
        return RedirectResponse("/chat", status_code=303)
    catalog = _catalog(request)
    return render_page(
        request,
        "landing.html",
        user=None,
        page="home",
        tiers=catalog.tiers,
        packs=catalog.packs,
        free_credits=_free_credits(catalog),
        **_prices(catalog),
    )


@router.get("/register")
async def register(request: Request, user: OptionalUser) -> Response:
    if user is not None:
        return RedirectResponse("/chat", status_code=303)
    return render_page(
        request, "register.html", user=None, page="register", free_credits=_free_credits(_catalog(request))
    )


@router.get("/login")
async def login(
    request: Request, user: OptionalUser, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next_path), status_code=303)
    return render_page(request, "login.html", user=None, page="login", next_path=safe_next(next_path))


@router.get("/logout")
async def logout(request: Request, user: OptionalUser) -> Response:
    """A page with the logout button: logging out by a plain GET would let any site log users out."""
    if user is None:
        return RedirectResponse("/", status_code=303)
    return render_page(request, "logout.html", user=user, page="logout")


@router.get("/chat")
async def chat(request: Request, user: OptionalUser) -> Response:
    if user is None:
        return _login_redirect(request)
    return render_page(request, "chat.html", user=user, page="chat", agent_name=_agent_name(request))


def _agent_name(request: Request) -> str:
    """The backend that will answer (the chat labels a reply with it before it is stored)."""
    runtime = getattr(request.app.state, "agent_runtime", None)
    if runtime is not None:
        return str(runtime.backend.name)
    return "claude" if request.app.state.settings.anthropic_api_key else "offline"


@router.get("/billing")
async def billing(request: Request, user: OptionalUser) -> Response:
    if user is None:
        return _login_redirect(request)
    catalog = _catalog(request)
    plan_features = [
        {"name": t.name, "display": t.display_name, "features": sorted(t.entitlements)} for t in catalog.tiers
    ]
    return render_page(
        request,
        "billing.html",
        user=user,
        page="billing",
        tiers=catalog.tiers,
        packs=catalog.packs,
        plan_features=plan_features,
        **_prices(catalog),
    )


def _prices(catalog: Catalog) -> dict[str, Any]:
    """The price list of every action, and what a plan's credits buy, for the plan cards."""
    return {
        "price_list": labels.price_list(catalog),
        "plan_buys": lambda credits: labels.plan_buys(credits, catalog),
    }


@router.get("/account")
async def account(request: Request, user: OptionalUser, db: DatabaseDep, now: NowDep) -> Response:
    """Profile, API keys (creation only where the plan has ``api_access``) and usage history."""
    if user is None:
        return _login_redirect(request)
    async with db.transaction() as session:
        has_api_access = await user_has_feature(session, user.id, API_ACCESS, now=now)
    api_tiers = [t.display_name for t in _catalog(request).tiers if API_ACCESS in t.entitlements]
    return render_page(
        request,
        "account.html",
        user=user,
        page="account",
        has_api_access=has_api_access,
        api_tiers=api_tiers,
        aws_principal=request.app.state.settings.aws_principal_arn,
        aws_permissions=json.dumps(PERMISSIONS_POLICY, indent=2),
    )


def _wants_html(request: Request) -> bool:
    """A person's browser asking for a page, not a script calling the API."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path == "/api":
        return False
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Add the pages, the static files and the HTML error pages to ``app``.

    Call after the JSON error handlers are installed: the 404/500 pages wrap them and
    answer HTML only to browsers on page paths; everything else keeps the contract's JSON.
    """
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for key, status_of in ((StarletteHTTPException, _http_status), (Exception, lambda _exc: 500)):
        json_handler = app.exception_handlers.get(key)
        if json_handler is not None:
            app.add_exception_handler(key, _html_or(json_handler, status_of))


def _http_status(exc: Exception) -> int:
    return exc.status_code if isinstance(exc, StarletteHTTPException) else 500


async def _user_or_none(request: Request) -> User | None:
    """Who is browsing, so an error page keeps their navigation; None if that cannot be told."""
    try:
        return await authenticate(request, request.app.state.db, request.app.state.clock())
    except Exception:  # an error page must render whatever went wrong with the session
        return None


def _html_or(json_handler: Any, status_of: Callable[[Exception], int]) -> Callable[..., Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        if _wants_html(request):
            status_code = status_of(exc)
            if status_code == 500:
                log.error("unhandled error on page %s", request.url.path, exc_info=exc)
                return render_error_page(request, status_code)  # no database work after a crash
            return render_error_page(request, status_code, user=await _user_or_none(request))
        response: Response = await json_handler(request, exc)
        return response

    return handler
