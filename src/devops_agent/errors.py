"""``DomainError``: the base of every error raised on purpose, carrying its contract code and HTTP status.

One convention for the whole house: an error class declares, once, the ``code`` the
contract names (the body's ``error``) and the HTTP ``status`` it is answered with;
an instance carries the sentence for people (``message``) and the extra fields the
contract lists for that code (``extra``, e.g. ``cap`` and ``used``). The packages keep
their errors next to their services (``billing.errors``, ``agent.service`` and its
siblings, ``payments.stripe_client``) and raise them; ``web.errors`` answers any of
them with one handler, so no endpoint catches an error to re-raise it as another.

A status is a plain number here: nothing below the web layer imports an HTTP library.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An error with its contract ``code``, HTTP ``status``, ``message`` and extra body fields."""

    code: str = "invalid_request"
    status: int = 400
    # Response headers the answer carries (``Retry-After`` on a 429); None for most errors.
    headers: dict[str, str] | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
