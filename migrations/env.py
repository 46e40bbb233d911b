"""Alembic environment: runs on a connection handed in by the app, or opens its own.

`devops_agent.migrate` passes its connection through ``config.attributes`` so that
the app and ``devops-agent init`` migrate inside their own event loop; the plain
``alembic`` command opens an async engine from DATABASE_URL.
"""

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from devops_agent.config import get_settings
from devops_agent.db import Base, Database
from devops_agent.models import load_all_models

load_all_models()
target_metadata = Base.metadata


def render_item(type_: str, obj: object, autogen_context: Any) -> str | bool:
    """Render our column types as their plain SQL types, so migrations never import app code."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{obj.impl!r}"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    db = Database(context.config.attributes.get("database_url") or get_settings().database_url)
    try:
        async with db.engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await db.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    asyncio.run(run_async())
