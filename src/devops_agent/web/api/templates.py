"""Saved templates over HTTP (plan feature ``custom_templates``, Professional and up).

Save a parameterised request once ("staging environment for {name}"), run it with
parameters later: a run is a chat message like any other, metered the same way
(``POST /api/templates/{id}/run`` answers exactly what ``POST /api/chat`` does).
Users whose plan lacks the feature get 403 ``feature_not_in_plan`` on every route.
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field, computed_field

from devops_agent.agent import templates
from devops_agent.agent.service import MAX_MESSAGE_LENGTH, ChatReply
from devops_agent.web.api import AUTHED, POOL_CREDITS, errors
from devops_agent.web.api.chat import AgentCallDep, IdPath, chat_reply
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep, require_feature
from devops_agent.web.schemas import FromAttributes, Strict, Timestamp

FEATURE = "custom_templates"

router = APIRouter(prefix="/api/templates", tags=["templates"], dependencies=[require_feature(FEATURE)])


class TemplateIn(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    prompt: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH, description="Text with {placeholders}.")


class TemplateOut(FromAttributes):
    id: int
    name: str
    prompt: str
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def parameters(self) -> list[str]:
        """The prompt's placeholders, in order of first use."""
        return templates.parameters(self.prompt)


class TemplateEnvelope(BaseModel):
    template: TemplateOut


class TemplatesOut(BaseModel):
    templates: list[TemplateOut]


class TemplateRunIn(Strict):
    params: dict[str, str] = Field(default_factory=dict, max_length=50)
    conversation_id: int | None = Field(default=None, ge=1, le=2**62)
    max_credits: int | None = Field(default=None, ge=1, le=1_000_000)
    org_id: int | None = Field(default=None, ge=1, le=2**62)


@router.post(
    "",
    status_code=201,
    response_model=TemplateEnvelope,
    summary="Save a named, parameterised request",
    responses=errors(*AUTHED, 409),
)
async def create(body: TemplateIn, user: CurrentUser, session: SessionDep, now: NowDep) -> TemplateEnvelope:
    saved = await templates.create_template(session, user_id=user.id, name=body.name, prompt=body.prompt, now=now)
    return TemplateEnvelope(template=TemplateOut.model_validate(saved))


@router.get("", response_model=TemplatesOut, summary="Your saved templates, by name", responses=errors(*AUTHED))
async def list_all(user: CurrentUser, session: SessionDep) -> TemplatesOut:
    rows = await templates.list_templates(session, user_id=user.id)
    return TemplatesOut(templates=[TemplateOut.model_validate(t) for t in rows])


@router.get(
    "/{template_id}", response_model=TemplateEnvelope, summary="One saved template", responses=errors(*AUTHED, 404)
)
async def get_one(template_id: IdPath, user: CurrentUser, session: SessionDep) -> TemplateEnvelope:
    found = await templates.get_template(session, user_id=user.id, template_id=template_id)
    return TemplateEnvelope(template=TemplateOut.model_validate(found))


@router.delete("/{template_id}", status_code=204, summary="Delete a saved template", responses=errors(*AUTHED, 404))
async def delete(template_id: IdPath, user: CurrentUser, session: SessionDep) -> Response:
    await templates.delete_template(session, user_id=user.id, template_id=template_id)
    return Response(status_code=204)


@router.post(
    "/{template_id}/run",
    response_model=ChatReply,
    summary="Run a saved template with parameters: a chat message, metered like any other",
    responses=errors(*AUTHED, 404, 409, 502, payment=POOL_CREDITS),
)
async def run(
    template_id: IdPath, body: TemplateRunIn, call: AgentCallDep, request: Request, background: BackgroundTasks
) -> ChatReply:
    async with call.db.transaction() as session:
        template = await templates.get_template(session, user_id=call.user.id, template_id=template_id)
    message = templates.render(template.prompt, body.params)
    return await chat_reply(call, message, body, request=request, background=background)
