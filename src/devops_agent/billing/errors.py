"""Domain errors of the credits engine; the web layer maps each to one HTTP error."""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "billing_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InsufficientCredits(BillingError):
    """The balance cannot pay for the action; nothing was changed."""

    code = "insufficient_credits"
    MESSAGE = "You have run out of credits. Please upgrade your plan or purchase more credits."

    def __init__(self, *, balance: int, required: int, tier_id: int | None) -> None:
        super().__init__(self.MESSAGE)
        self.balance = balance
        self.required = required
        self.tier_id = tier_id


class AccountNotFound(BillingError):
    code = "subscription_not_found"


class TierNotFound(BillingError):
    code = "tier_not_found"


class AlreadyOnTier(BillingError):
    code = "already_on_tier"


class InvalidPackSize(BillingError):
    code = "invalid_pack_size"


class PurchaseNotFound(BillingError):
    code = "purchase_not_found"


class InvalidAmount(BillingError):
    code = "invalid_request"


class ChargeNotFound(BillingError):
    code = "usage_not_found"


class OrganizationNotFound(BillingError):
    """No such organization, or the user is not a member (a non-member must not learn it exists)."""

    code = "organization_not_found"


class MemberCapReached(BillingError):
    """The charge would pass the member's monthly cap in the organization, however full the pool."""

    code = "member_cap_reached"

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


class MemberNotFound(BillingError):
    code = "member_not_found"


class AlreadyMember(BillingError):
    code = "already_exists"


class OrganizationLimit(BillingError):
    """The user owns as many organizations as one may (each new pool comes with free monthly credits)."""

    code = "organization_limit"


class OwnerRequired(BillingError):
    """The change would leave the organization without an owner: transfer ownership first."""

    code = "owner_required"


class InvitationNotFound(BillingError):
    code = "invitation_not_found"


class InvitationExpired(BillingError):
    code = "invitation_expired"


class InvitationUsed(BillingError):
    """The invitation was accepted or revoked already: a token works once."""

    code = "invitation_used"


class InvitationWrongUser(BillingError):
    """The invitation was sent to another email address than the accepting user's."""

    code = "invitation_wrong_user"
