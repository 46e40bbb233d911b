"""Saved templates: named, parameterised requests ("staging environment for {name}").

A template's prompt may hold ``{placeholders}`` (letters, digits and ``_``); running it
fills every placeholder from the given parameters and sends the result as a chat
message, metered like any other. Only plain placeholders are allowed (no format
specs, no attribute access), so a template can never reach into Python objects.
The plan feature ``custom_templates`` gates them (checked by the web layer).
"""

from __future__ import annotations

import re
import string
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import SavedTemplate
from .service import AgentError, check_storable

PLACEHOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
MAX_PARAMETER_LENGTH = 200


class InvalidTemplate(AgentError):
    code = "invalid_request"
    status = 400


class TemplateNotFound(AgentError):
    code = "template_not_found"
    status = 404


class TemplateExists(AgentError):
    code = "already_exists"
    status = 409


def parameters(prompt: str) -> list[str]:
    """The placeholders of a prompt, in order of first use; raise ``InvalidTemplate`` on bad syntax."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise InvalidTemplate(f"The template is malformed: {exc} (write {{{{ and }}}} for literal braces).") from exc
    for _text, field, spec, conversion in parsed:
        if field is None:
            continue
        if not PLACEHOLDER.match(field) or spec or conversion:
            raise InvalidTemplate(
                f"Bad placeholder {{{field}}}: use plain names like {{name}} (letters, digits and _)."
            )
        if field not in names:
            names.append(field)
    return names


def render(prompt: str, params: dict[str, str]) -> str:
    """Fill every placeholder; missing or unknown parameters are an error, not a guess."""
    names = parameters(prompt)
    missing = [n for n in names if n not in params]
    unknown = sorted(set(params) - set(names))
    if missing:
        raise InvalidTemplate(f"Missing parameter(s): {', '.join(missing)}.")
    if unknown:
        raise InvalidTemplate(f"Unknown parameter(s): {', '.join(unknown)}; this template takes {names or 'none'}.")
    for name, value in params.items():
        if len(value) > MAX_PARAMETER_LENGTH:
            raise InvalidTemplate(f"Parameter {name} is longer than {MAX_PARAMETER_LENGTH} characters.")
    return prompt.format_map(params)


async def create_template(
    session: AsyncSession, *, user_id: int, name: str, prompt: str, now: datetime
) -> SavedTemplate:
    """Save a template; its name is unique per user (409 ``already_exists``)."""
    check_storable(name, "name")
    check_storable(prompt, "template")
    parameters(prompt)
    template = SavedTemplate(user_id=user_id, name=name.strip(), prompt=prompt, created_at=now, updated_at=now)
    try:
        async with session.begin_nested():
            session.add(template)
    except IntegrityError as exc:
        raise TemplateExists(f"You already have a template named {name.strip()!r}.") from exc
    return template


async def list_templates(session: AsyncSession, *, user_id: int) -> list[SavedTemplate]:
    rows = await session.execute(
        select(SavedTemplate).where(SavedTemplate.user_id == user_id).order_by(SavedTemplate.name)
    )
    return list(rows.scalars())


async def get_template(session: AsyncSession, *, user_id: int, template_id: int) -> SavedTemplate:
    """One of the user's templates; 404 for anyone else's."""
    template = await session.get(SavedTemplate, template_id)
    if template is None or template.user_id != user_id:
        raise TemplateNotFound(f"There is no template {template_id}.")
    return template


async def delete_template(session: AsyncSession, *, user_id: int, template_id: int) -> None:
    result = await session.execute(
        delete(SavedTemplate).where(SavedTemplate.id == template_id, SavedTemplate.user_id == user_id)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise TemplateNotFound(f"There is no template {template_id}.")
