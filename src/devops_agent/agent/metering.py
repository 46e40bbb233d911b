"""Credits for one agent run: the message, then each tool call, each in its own transaction.

The order never changes: check, charge BEFORE doing, do, record. A charge commits
in a short ``Database.transaction()`` of its own before the cloud API (or the LLM)
is called, and the outcome is written in a new one afterwards, so no transaction
is ever open while we wait on the network (on SQLite it would stop every writer).

Who pays when something fails:

* The backend fails (timeout, provider error, our bug): the message's credit is
  refunded (``billing.refund``) and its usage log says ``success: false``.
* A tool fails on our side or the provider's (no connection, throttling, AWS 5xx,
  a bug in the tool): refunded, for the same reason; the user did not get the action.
* A tool the cloud answered with a refusal of the request itself (no such
  instance, a bucket name already taken): the charge stands and the usage log is
  marked failed (``billing.mark_failed``). AWS did the work of answering, the
  answer is the result the user asked for, and refunding it would make probing
  free; the usage history still shows the failure.
* A tool the balance (or the run's ``max_credits``, or the member's cap in an
  organization) cannot pay is not run and not charged; the model is told so and
  tells the user.

With ``org_id`` the organization's pool pays (the engine checks membership and caps).

Idempotency: when the request has an ``Idempotency-Key``, the message's charge carries
a key derived from it (``<run>:message``), so a retried request can never charge twice.
Tool calls are charged under the turn's scope (``turn:<message>:<attempt>:tool:<n>``,
see ``agent.turns``), which is how an interrupted turn's charges are found and refunded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing, metrics
from devops_agent.agent.tools.registry import ToolOutcome
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.errors import InsufficientCredits, MemberCapReached
from devops_agent.billing.models import ActionType
from devops_agent.db import Database

MESSAGE_ACTION = ActionType.AGENT_MESSAGE.value


@dataclass(frozen=True)
class ToolCharge:
    """A tool call that is paid for and may run."""

    usage_log_id: int
    cost: int
    tool_name: str = ""


@dataclass(frozen=True)
class Refusal:
    """A tool call that may not run, and the reason the model (and the user) is told."""

    reason: str


@dataclass
class Meter:
    """The credits of one run of the agent for one user in one conversation."""

    db: Database
    catalog: Catalog
    clock: Callable[[], datetime]
    user_id: int
    run_key: str | None  # the request's Idempotency-Key scope; None: no replays, so no keyed charges
    max_credits: int | None = None
    conversation_id: int | None = None
    org_id: int | None = None  # the organization whose pool pays (a team workspace); None: the user's own
    spent: int = 0
    balance: int | None = None
    tool_scope: str | None = None  # the turn's scope of tool charges, set once its message is stored
    _tool_seq: int = 0

    def _key(self, part: str) -> str | None:
        # A run nobody can retry needs no replay lookup (which costs a read and a savepoint).
        return f"{self.run_key}:{part}" if self.run_key else None

    def _tool_key(self) -> str | None:
        if self.tool_scope is not None:
            return f"{self.tool_scope}:tool:{self._tool_seq}"
        return self._key(f"tool:{self._tool_seq}")

    @property
    def account(self) -> tuple[str, int]:
        """The account that pays, as the key its charges and refunds queue on in this process."""
        return ("org", self.org_id) if self.org_id is not None else ("user", self.user_id)

    @property
    def message_cost(self) -> int:
        return self.catalog.cost_of(MESSAGE_ACTION)

    async def charge_message(self, session: AsyncSession) -> billing.ChargeResult:
        """Charge the message inside the caller's transaction (it creates the conversation too).

        Raises ``InsufficientCredits`` (402) when the balance is short; nothing is changed then.
        """
        result = await billing.charge(
            session,
            user_id=self.user_id,
            amount=self.message_cost,
            action_type=ActionType.AGENT_MESSAGE,
            now=self.clock(),
            conversation_id=self.conversation_id,
            idempotency_key=self._key("message"),
            org_id=self.org_id,
        )
        if not result.replayed:
            self.spent += result.credits_used
            metrics.count_charge(MESSAGE_ACTION, result.credits_used)
        self.balance = result.balance.total
        return result

    async def refund_message(self, usage_log_id: int, error: str) -> None:
        """Give the message's credit back after a failure on our side."""
        async with self.db.transaction(queue=self.account) as session:
            result = await billing.refund(session, usage_log_id=usage_log_id, now=self.clock(), error_message=error)
        if not result.replayed:
            self.spent -= self.message_cost
            metrics.count_refund(MESSAGE_ACTION, self.message_cost)
        self.balance = result.balance.total

    async def charge_tool(self, tool_name: str, cost: int | None = None) -> ToolCharge | Refusal:
        """Charge a tool call (``cost``: its price by size, else the catalog's) before it runs, committed."""
        cost = self.catalog.cost_of(tool_name) if cost is None else cost
        if self.max_credits is not None and self.spent + cost > self.max_credits:
            left = max(self.max_credits - self.spent, 0)
            return Refusal(
                f"not run: {tool_name} costs {cost} credits and this message may spend only {left} more "
                f"(max_credits {self.max_credits})"
            )
        self._tool_seq += 1
        try:
            async with self.db.transaction(queue=self.account) as session:
                result = await billing.charge(
                    session,
                    user_id=self.user_id,
                    amount=cost,
                    action_type=ActionType.TOOL_USE,
                    tool_name=tool_name,
                    conversation_id=self.conversation_id,
                    now=self.clock(),
                    idempotency_key=self._tool_key(),
                    org_id=self.org_id,
                )
        except MemberCapReached as exc:
            return Refusal(
                f"not run: {tool_name} costs {cost} credits and you have used {exc.used} of your "
                f"{exc.cap}-credit monthly cap in this organization; ask an admin to raise it"
            )
        except InsufficientCredits as exc:
            self.balance = exc.balance
            return Refusal(
                f"not run: {tool_name} costs {cost} credits and you have {exc.balance} left; "
                "upgrade your plan or buy a credit pack to run it"
            )
        self.spent += result.credits_used
        self.balance = result.balance.total
        if not result.replayed:
            metrics.count_charge(tool_name, result.credits_used)
        return ToolCharge(result.usage_log_id, cost, tool_name)

    async def settle_tool(self, paid: ToolCharge, outcome: ToolOutcome) -> int:
        """Record how a paid tool call went; return the credits it finally cost."""
        if outcome.ok:
            return paid.cost
        async with self.db.transaction(queue=self.account) as session:
            if outcome.our_side:
                result = await billing.refund(
                    session, usage_log_id=paid.usage_log_id, now=self.clock(), error_message=outcome.summary
                )
            else:
                await billing.mark_failed(session, usage_log_id=paid.usage_log_id, error_message=outcome.summary)
        if not outcome.our_side:
            return paid.cost
        self.balance = result.balance.total
        self.spent -= paid.cost
        if not result.replayed:
            metrics.count_refund(paid.tool_name, paid.cost)
        return 0
