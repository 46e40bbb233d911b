"""Password hashes: Argon2id through argon2-cffi, run in a worker thread.

Hashing burns its deliberate CPU time in a thread, so the event loop (the web server)
keeps serving meanwhile; the command line uses the same hasher.
"""

from __future__ import annotations

import os
import secrets

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Argon2id hashing with argon2-cffi's defaults; tests pass cheaper parameters.

    Each hash takes 64 MiB and a core for tens of milliseconds, so at most one hash per
    core runs at a time (a burst of sign-ups queues instead of exhausting memory).
    """

    def __init__(self, hasher: PasswordHasher | None = None, *, concurrency: int | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._limiter = anyio.CapacityLimiter(concurrency or os.cpu_count() or 1)
        # Verified when the account does not exist, so that "no such user" takes as long as "wrong password".
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self.hasher.verify(password_hash or self._dummy, password) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check, limiter=self._limiter)
