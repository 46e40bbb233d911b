"""`devops-agent`: the command line of DevOps Agent (Typer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

import typer

from devops_agent import billing
from devops_agent.billing.catalog import Catalog, CatalogError, load_catalog
from devops_agent.billing.catalog_sync import open_missing_accounts, summarize, sync_catalog
from devops_agent.billing.periods import utcnow
from devops_agent.config import Settings, get_settings
from devops_agent.db import Database
from devops_agent.migrate import take_startup_lock, upgrade

app = typer.Typer(
    help="DevOps Agent: cloud chores through chat, paid for with credits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")


# A command waits this long for SQLite's write lock while the server writes (the server
# holds it for milliseconds at a time); it writes in short transactions itself, so the
# server's requests never wait long for it either.
CLI_WRITE_WAIT_SECONDS = 30.0
# Rows a command writes per transaction.
BATCH = 200


def _run(work: Callable[[Database], Awaitable[T]], database_url: str | None = None) -> T:
    async def runner() -> T:
        db = Database(database_url or get_settings().database_url, write_wait=CLI_WRITE_WAIT_SECONDS)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(runner())


def checked_catalog(settings: Settings) -> Catalog:
    """The pricing file, its tool names checked against the agent's tools (``CatalogError`` if not)."""
    from devops_agent.agent.tools import check_catalog_tools  # the cloud SDKs load only when needed

    catalog = load_catalog(settings.pricing_file)
    check_catalog_tools(catalog)
    return catalog


async def initialize(db: Database) -> list[str]:
    """Migrate, sync the catalog, open missing accounts; return the lines of a summary."""
    settings = get_settings()
    await upgrade(db)
    catalog = checked_catalog(settings)
    async with db.transaction() as session:
        await take_startup_lock(session)  # a server's workers may be starting meanwhile
        report = await sync_catalog(session, catalog)
    while True:  # in short transactions: a server may be running on this database
        async with db.transaction() as session:
            opened = await open_missing_accounts(session, now=utcnow(), limit=BATCH)
        report.accounts_opened += opened
        if opened < BATCH:
            break
    async with db.transaction(write=False) as session:
        summary = await summarize(session)
    lines = []
    if report.changed:
        for label, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("deactivated", report.deactivated),
        ):
            if names:
                lines.append(f"Tiers {label}: {', '.join(names)}")
        if report.accounts_opened:
            lines.append(f"Users moved to the Free tier: {report.accounts_opened}")
    else:
        lines.append("Nothing to change: the database already matches the pricing catalog.")
    lines.append("")
    lines.append(f"{'Tier':<14}{'Price/month':>12}{'Credits':>9}{'Users':>7}  Status")
    for t in summary.tiers:
        status = "active" if t.is_active else "inactive"
        lines.append(f"{t.display_name:<14}{'$' + t.monthly_price:>12}{t.monthly_credits:>9}{t.users:>7}  {status}")
    lines.append("")
    lines.append(
        f"Credits outstanding: {summary.monthly_outstanding} monthly + {summary.purchased_outstanding} purchased"
        f" + {summary.promotional_outstanding} promotional"
    )
    return lines


@app.command()
def init() -> None:
    """Apply migrations, sync tiers from the pricing catalog, put users without a plan on Free."""
    try:
        lines = _run(initialize)
    except CatalogError as exc:
        typer.echo(f"error: the pricing catalog is invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


@app.command("reset-due")
def reset_due() -> None:
    """Run the monthly reset for every account whose period has ended; expire grants past their expiry (for cron)."""
    from devops_agent.billing.accounts import due_grant_accounts, settle

    async def resets(db: Database, now: datetime) -> int:
        done = 0
        while True:
            async with db.transaction(write=False) as session:
                due = await billing.due_account_user_ids(session, now=now)
                due_orgs = await billing.due_account_org_ids(session, now=now)
            if not due and not due_orgs:
                return done
            for user_id in due:
                async with db.transaction() as session:
                    done += await billing.apply_due_reset(session, user_id=user_id, now=now)
            for org_id in due_orgs:  # organizations' pools (teams)
                async with db.transaction() as session:
                    done += await billing.apply_due_reset(session, user_id=None, org_id=org_id, now=now)

    async def expiries(db: Database, now: datetime) -> int:
        # Grants expire lazily when their account is read or charged; this settles the
        # accounts nobody touched, so balances and analytics do not count dead credits.
        done = 0
        while True:
            async with db.transaction(write=False) as session:
                due = await due_grant_accounts(session, now=now)
            settled = 0
            for user_id, org_id in due:
                async with db.transaction() as session:
                    settled += await settle(session, user_id=user_id, org_id=org_id, now=now)
            done += settled
            if not settled:  # nothing left that this run can expire
                return done

    async def work(db: Database) -> tuple[int, int]:
        now = utcnow()
        return await resets(db, now), await expiries(db, now)

    reset, expired = _run(work)
    typer.echo(f"Reset {reset} account(s).")
    typer.echo(f"Expired grants on {expired} account(s).")


@app.command()
def prune(
    keep_days: Annotated[
        int, typer.Option(min=1, help="Keep idempotency records this many days (retries come sooner).")
    ] = 30,
) -> None:
    """Delete old idempotency records, expired login-throttle rows and sessions (for a daily cron job)."""
    from devops_agent.web import housekeeping

    async def work(db: Database) -> housekeeping.Pruned:
        return await housekeeping.prune(db, now=utcnow(), keep=timedelta(days=keep_days))

    pruned = _run(work)
    typer.echo(
        f"Deleted {pruned.idempotency_records} idempotency record(s) older than {keep_days} day(s)"
        f", {pruned.login_throttle} expired login-throttle row(s) and {pruned.sessions} expired session(s)."
    )


@app.command()
def audit() -> None:
    """Check the books of every account (personal and team pools); exit 1 on any discrepancy (for cron).

    Exit 2 when the books could not be checked (the database did not answer): a monitor
    tells "the books are wrong" from "the check did not run".
    """
    from sqlalchemy.exc import SQLAlchemyError

    from devops_agent.billing import books

    async def work(db: Database) -> books.AuditReport:
        report = await books.check_books(db, clock=utcnow)
        async with db.transaction() as session:
            await books.record_run(session, report)
        return report

    try:
        report = _run(work)
    except (SQLAlchemyError, OSError) as exc:
        typer.echo(f"error: the books could not be checked: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in books.summary_lines(report):
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def recover() -> None:
    """Refund chat turns and approved actions, and free requests, that a dead process left unfinished (for cron)."""
    from devops_agent.agent import approvals, turns
    from devops_agent.agent.cloud_models import PendingAction
    from devops_agent.web import idempotency

    settings = get_settings()
    lease = timedelta(seconds=settings.idempotency_lease_seconds)

    async def work(db: Database) -> tuple[list[turns.Refunded], list[PendingAction], int]:
        now = utcnow()
        return (
            await turns.recover_expired(db, now=now),
            await approvals.recover_expired(db, now=now, low_credit_threshold=settings.low_credit_threshold),
            await idempotency.release_stale(db, now=now, lease=lease),
        )

    refunded, actions, released = _run(work)
    for turn in refunded:
        typer.echo(
            f"Message {turn.message_id} of user {turn.user_id}: {turn.charges} charge(s) refunded, "
            f"{turn.credits} credit(s) back."
        )
    typer.echo(f"Refunded {len(refunded)} interrupted chat turn(s): {sum(t.credits for t in refunded)} credit(s) back.")
    for action in actions:
        typer.echo(f"Action {action.id} ({action.tool}) of user {action.user_id}: {action.credits} credit(s) back.")
    typer.echo(
        f"Refunded {len(actions)} interrupted approved action(s): {sum(a.credits for a in actions)} credit(s) back."
    )
    typer.echo(f"Released {released} Idempotency-Key(s) left in progress (a retry runs them again).")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Start the web service."""
    from devops_agent.web.server import run_server

    run_server(host=host, port=port, workers=workers)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5100,
) -> None:
    """Run the sandbox AWS (moto) on its own; point SANDBOX_URL at it to keep it across restarts."""
    from moto.server import main

    typer.echo(f"Sandbox AWS on http://{host}:{port}; set SANDBOX_URL=http://{host}:{port} for serve.")
    main(["-H", host, "-p", str(port)])


stripe_app = typer.Typer(help="Stripe: the Products and Prices that sell the pricing catalog.", no_args_is_help=True)
app.add_typer(stripe_app, name="stripe")


@stripe_app.command("sync")
def stripe_sync() -> None:
    """Create or update one Stripe Product and Price per paid tier and per pack (idempotent)."""
    from devops_agent.payments.stripe_client import PaymentProviderError, make_client
    from devops_agent.payments.sync import sync_prices

    settings = get_settings()
    if not settings.stripe_secret_key:
        typer.echo("STRIPE_SECRET_KEY is not set: payments run in demo mode, there is nothing to sync.", err=True)
        raise typer.Exit(1)

    async def work(db: Database) -> list[str]:
        await upgrade(db)
        return await sync_prices(db, make_client(settings), checked_catalog(settings), now=utcnow())

    try:
        lines = _run(work)
    except PaymentProviderError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    except CatalogError as exc:
        typer.echo(f"error: the pricing catalog is invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="New admin's username, or an existing user's name or email.")],
    email: Annotated[str | None, typer.Option(help="Email of a new admin (prompted when missing).")] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="DEVOPS_AGENT_ADMIN_PASSWORD", help="Password of a new admin (prompted when missing)."),
    ] = None,
) -> None:
    """Create an administrator (who sees /admin), or make an existing user one."""
    from devops_agent.users import admins

    async def work(db: Database) -> admins.AdminResult:
        await initialize(db)  # a fresh database works too: migrations and the Free tier first
        promoted = await admins.promote(db, username=username, now=utcnow())
        if promoted is not None:
            return promoted
        mail = email or typer.prompt("Email")
        secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return await admins.create_admin(db, username=username, email=mail, password=secret, now=utcnow())

    try:
        result = _run(work)
    except admins.AdminInputError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except CatalogError as exc:
        typer.echo(f"error: the pricing catalog is invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Admin {result.username} (user {result.user_id}): {result.outcome}.")


def main() -> None:
    app()
