"""The organizations' pages: your teams, one team's workspace, and joining by invitation.

Like every page they hold no business logic: they render the layout and leave the
numbers, the members and every change to ``static/js/orgs.js``, which calls the
``/api/orgs`` endpoints the scripts use too.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from devops_agent.billing.orgs import TEAM_FEATURE
from devops_agent.web.deps import DatabaseDep, NowDep, OptionalUser, user_has_feature
from devops_agent.web.pages import render_page

router = APIRouter(include_in_schema=False)


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


@router.get("/orgs")
async def orgs_index(request: Request, user: OptionalUser, db: DatabaseDep, now: NowDep) -> Response:
    """Your organizations, and the form to create one where the plan allows teams."""
    if user is None:
        return _login_redirect(request)
    async with db.transaction() as session:
        can_create = await user_has_feature(session, user.id, TEAM_FEATURE, now=now)
    team_tiers = [t.display_name for t in request.app.state.catalog.tiers if TEAM_FEATURE in t.entitlements]
    return render_page(request, "orgs.html", user=user, page="orgs", can_create=can_create, team_tiers=team_tiers)


@router.get("/orgs/join/{token}")
async def org_join(request: Request, user: OptionalUser, token: str) -> Response:
    """What an invitation is for, with the button that accepts it."""
    if user is None:
        return _login_redirect(request)
    return render_page(request, "org_join.html", user=user, page="orgs", token=token)


@router.get("/orgs/{org_id}")
async def org_detail(request: Request, user: OptionalUser, org_id: int = Path(ge=1, le=2**63 - 1)) -> Response:
    """One organization: its pool, members, caps, invitations and usage (what your role may see)."""
    if user is None:
        return _login_redirect(request)
    return render_page(
        request, "org.html", user=user, page="orgs", org_id=org_id, packs=request.app.state.catalog.packs
    )
