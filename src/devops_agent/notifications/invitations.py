"""The invitation email: queued after the invitation committed, its token sealed in the outbox.

The caller (the request that created or resent the invitation) holds the clear token in
memory and passes it here; it is stored only sealed (``sealing.Sealer``) beside a body
whose link has a slot for it, and dropped once the email is delivered. Queuing checks the
token against the stored hash, so of two resends racing only the newest token is sent,
and it marks earlier emails of the invitation still waiting as skipped: their link no
longer works.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from devops_agent.billing.models import User
from devops_agent.billing.org_models import Organization, OrganizationInvitation
from devops_agent.billing.orgs import hash_token

from . import emails
from .models import Cause, EmailOutbox, OutboxStatus
from .service import Notifier


async def queue_invitation(notifier: Notifier, *, invitation_id: int, token: str, now: datetime) -> list[int]:
    """Queue the email of a pending invitation with ``token`` (its current one); return the outbox ids."""
    inviter = aliased(User)
    async with notifier.db.transaction() as session:
        row = (
            await session.execute(
                select(OrganizationInvitation, Organization.name, inviter.username)
                .join(Organization, Organization.id == OrganizationInvitation.organization_id)
                .outerjoin(inviter, inviter.id == OrganizationInvitation.invited_by)
                .where(OrganizationInvitation.id == invitation_id)
            )
        ).first()
        if row is None:
            return []
        invitation, org_name, inviter_name = row
        if (
            invitation.token_hash != hash_token(token)
            or invitation.accepted_at is not None
            or invitation.revoked_at is not None
            or invitation.expires_at <= now
        ):
            return []
        await session.execute(
            update(EmailOutbox)
            .where(EmailOutbox.invitation_id == invitation.id, EmailOutbox.status == OutboxStatus.PENDING.value)
            .values(status=OutboxStatus.SKIPPED.value, sealed_token=None)
        )
        draft = emails.org_invitation(
            org_name=org_name,
            inviter=inviter_name,
            role=invitation.role,
            expires_at=invitation.expires_at,
            base_url=notifier.base_url,
        )
        outbox = EmailOutbox(
            user_id=None,
            invitation_id=invitation.id,
            cause=Cause.ORG_INVITATION.value,
            # One row per token: the hash's head tells the resends apart (it is no secret).
            period_key=f"invitation:{invitation.id}:{invitation.token_hash[:16]}",
            to_address=invitation.email,
            subject=draft.subject,
            body=draft.body,
            essential=True,
            status=OutboxStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            sealed_token=notifier.sealer.seal(token),
        )
        session.add(outbox)
        await session.flush()
        outbox_id = outbox.id
    notifier.kick()
    return [outbox_id]


async def void_invitation_emails(notifier: Notifier, *, invitation_id: int) -> int:
    """Skip the invitation's emails still waiting (it was revoked): their link no longer works."""
    async with notifier.db.transaction() as session:
        result = await session.execute(
            update(EmailOutbox)
            .where(EmailOutbox.invitation_id == invitation_id, EmailOutbox.status == OutboxStatus.PENDING.value)
            .values(status=OutboxStatus.SKIPPED.value, sealed_token=None)
        )
    return int(getattr(result, "rowcount", 0) or 0)
