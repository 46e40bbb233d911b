"""The admin API's view of the running system: the last books audit, the email outbox, the page.

Like the rest of ``/api/admin`` (``web.api.admin``), every route needs a user with
``is_admin``; the page (``/admin``) reads everything from the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from devops_agent.billing import books
from devops_agent.notifications import notifier_for, recent_outbox
from devops_agent.web.api.admin import ADMIN_ERRORS, Limit
from devops_agent.web.deps import AdminUser, DatabaseDep, OptionalUser, SessionDep
from devops_agent.web.pages import render_page
from devops_agent.web.schemas import FromAttributes, Timestamp

router = APIRouter(prefix="/api/admin", tags=["admin"])
page_router = APIRouter(include_in_schema=False)


# --- the books audit ------------------------------------------------------------------


class DiscrepancyOut(BaseModel):
    check: str
    account: str
    detail: str


class BooksRunOut(FromAttributes):
    ok: bool
    started_at: Timestamp
    finished_at: Timestamp
    accounts: int
    discrepancies: int
    checks: dict[str, int] = Field(description="Discrepancies found by each check (0: it held).")
    examples: list[DiscrepancyOut] = Field(description="The first discrepancies found.")


class BooksOut(BaseModel):
    last_run: BooksRunOut | None = Field(description="The newest `devops-agent audit` run; null when it never ran.")


@router.get(
    "/books",
    response_model=BooksOut,
    summary="The last books audit (`devops-agent audit`): when, and whether the books held",
    responses=ADMIN_ERRORS,
)
async def books_audit(_admin: AdminUser, session: SessionDep) -> BooksOut:
    run = await books.last_run(session)
    return BooksOut(last_run=BooksRunOut.model_validate(run) if run is not None else None)


# --- emails ---------------------------------------------------------------------------


class EmailOut(BaseModel):
    id: int
    user_id: int | None = Field(description="The user it concerns; null for an invitation to an address.")
    to: str
    cause: str
    subject: str
    body: str
    status: str
    attempts: int
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp | None


class EmailsOut(BaseModel):
    emails: list[EmailOut]
    smtp_configured: bool


@router.get(
    "/emails",
    response_model=EmailsOut,
    summary="The email outbox: what was sent, logged or is failing",
    responses=ADMIN_ERRORS,
)
async def emails(_admin: AdminUser, session: SessionDep, db: DatabaseDep, limit: Limit = 50) -> EmailsOut:
    rows = await recent_outbox(session, limit=limit)
    return EmailsOut(
        emails=[
            EmailOut(
                id=r.id,
                user_id=r.user_id,
                to=r.to_address,
                cause=r.cause,
                subject=r.subject,
                body=r.body,
                status=r.status,
                attempts=r.attempts,
                last_error=r.last_error,
                created_at=r.created_at,
                sent_at=r.sent_at,
            )
            for r in rows
        ],
        smtp_configured=notifier_for(db).smtp is not None,
    )


# --- the page -------------------------------------------------------------------------


@page_router.get("/admin")
async def admin_page(request: Request, user: OptionalUser) -> Response:
    """The dashboard (``templates/admin.html``); its script reads everything from the API above."""
    if user is None:
        return RedirectResponse("/login?next=/admin", status_code=303)
    if not user.is_admin:
        return render_page(
            request,
            "error.html",
            user=user,
            status_code=403,
            title="Administrators only",
            message="This page is for the people who run DevOps Agent.",
        )
    return render_page(request, "admin.html", user=user, page="admin")
