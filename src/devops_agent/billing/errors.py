"""Domain errors of the credits engine (accounts, plans, packs, organizations, seats, invitations).

Each class declares its contract ``code`` and HTTP ``status`` once (``DomainError``);
``web.errors`` answers all of them with one handler.
"""

from __future__ import annotations

from devops_agent.errors import DomainError


class BillingError(DomainError):
    """Base of every error the engine raises on purpose."""

    code = "billing_error"
    status = 400


class InsufficientCredits(BillingError):
    """The balance cannot pay for the action; nothing was changed."""

    code = "insufficient_credits"
    status = 402
    MESSAGE = "You have run out of credits. Please upgrade your plan or purchase more credits."

    def __init__(self, *, balance: int, required: int, tier_id: int | None) -> None:
        super().__init__(self.MESSAGE)
        self.balance = balance
        self.required = required
        self.tier_id = tier_id


class AccountNotFound(BillingError):
    code = "subscription_not_found"
    status = 404


class TierNotFound(BillingError):
    code = "tier_not_found"
    status = 404


class AlreadyOnTier(BillingError):
    code = "already_on_tier"
    status = 400


class InvalidPackSize(BillingError):
    code = "invalid_pack_size"
    status = 400


class PurchaseNotFound(BillingError):
    code = "purchase_not_found"
    status = 404


class InvalidAmount(BillingError):
    code = "invalid_request"
    status = 400


class ChargeNotFound(BillingError):
    code = "usage_not_found"
    status = 404


class OrganizationNotFound(BillingError):
    """No such organization, or the user is not a member (a non-member must not learn it exists)."""

    code = "organization_not_found"
    status = 404


class MemberCapReached(BillingError):
    """The charge would pass the member's monthly cap in the organization, however full the pool."""

    code = "member_cap_reached"
    status = 402

    def __init__(self, *, cap: int, used: int, required: int = 1) -> None:
        super().__init__(
            f"You have used {used} of your {cap} monthly credits in this organization. "
            "Ask an owner or admin of the organization to raise your cap.",
            cap=cap,
            used=used,
        )
        self.cap = cap
        self.used = used
        self.required = required


class SeatLimitReached(BillingError):
    """The organization's plan includes no more members and sells no extra seat."""

    code = "seat_limit_reached"
    status = 402

    def __init__(self, *, included: int, used: int, tier: str) -> None:
        super().__init__(
            f"The {tier} plan of this organization includes {included} members and all {used} seats are taken "
            "(pending invitations hold one each). The owner can move the organization to a bigger plan.",
            included=included,
            used=used,
        )


class OrgForbidden(BillingError):
    """The member's role does not allow this action in the organization."""

    code = "forbidden"
    status = 403


class MemberNotFound(BillingError):
    code = "member_not_found"
    status = 404


class AlreadyMember(BillingError):
    code = "already_exists"
    status = 409


class OrganizationLimit(BillingError):
    """The user owns as many organizations as one may (each new pool comes with free monthly credits)."""

    code = "organization_limit"
    status = 409


class OwnerRequired(BillingError):
    """The change would leave the organization without an owner: transfer ownership first."""

    code = "owner_required"
    status = 409


class InvitationNotFound(BillingError):
    code = "invitation_not_found"
    status = 404


class InvitationExpired(BillingError):
    code = "invitation_expired"
    status = 410


class InvitationUsed(BillingError):
    """The invitation was accepted or revoked already: a token works once."""

    code = "invitation_used"
    status = 409


class InvitationWrongUser(BillingError):
    """The invitation was sent to another email address than the accepting user's."""

    code = "invitation_wrong_user"
    status = 403
