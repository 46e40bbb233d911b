"""Secrets of the web layer: signed session cookies, CSRF tokens, API keys.

(Password hashes are ``accounts.passwords``: the command line makes users too.)

* Sessions: a cookie signed with ``SECRET_KEY`` (itsdangerous) that carries the user
  id, the session's id, its CSRF token and a fingerprint of the password hash. The
  session id names a row of ``user_sessions`` (``web.sessions``): deleting it ends the
  session on every worker, so logout really ends it, even for a copied cookie. The
  fingerprint still ends old sessions when a password is changed some other way.
* CSRF: the double-submit token of the contract; it is also inside the signed session,
  so a token planted by a sibling domain cannot match.
* API keys: 32 random bytes behind a recognisable ``da_live_`` prefix; only their
  SHA-256 is stored (a fast hash is right for high-entropy secrets).
* ``SECRET_KEY``: when not configured, generated once and kept in ``.secret_key``
  next to the SQLite database (or in the working directory), so sessions survive a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import make_url

from devops_agent.config import Settings

SESSION_COOKIE = "session"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_MAX_AGE = 30 * 24 * 3600
API_KEY_PREFIX = "da_live_"
SECRET_KEY_FILE = ".secret_key"


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the password hash: changes when the password does, reveals nothing."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SessionData:
    user_id: int
    csrf: str
    fingerprint: str
    session_id: str


class SessionSigner:
    """Signs and reads the session cookie."""

    def __init__(self, secret_key: str, max_age: int = SESSION_MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="devops-agent-session")
        self.max_age = max_age

    def dumps(self, data: SessionData) -> str:
        return self._serializer.dumps({"u": data.user_id, "c": data.csrf, "f": data.fingerprint, "s": data.session_id})

    def loads(self, value: str) -> SessionData | None:
        """The session in a cookie, or None when it is forged, expired or malformed."""
        try:
            raw = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(raw, dict):
            return None
        user_id, csrf, fingerprint, session_id = raw.get("u"), raw.get("c"), raw.get("f"), raw.get("s")
        if not (
            isinstance(user_id, int)
            and isinstance(csrf, str)
            and isinstance(fingerprint, str)
            and isinstance(session_id, str)  # absent from cookies signed before sessions were stored
        ):
            return None
        return SessionData(user_id, csrf, fingerprint, session_id)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_id_hash(session_id: str) -> str:
    """The stored form of a session id (like API keys: a fast hash suits a random secret)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def tokens_match(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; a missing one never matches."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


@dataclass(frozen=True)
class NewApiKey:
    secret: str
    prefix: str
    key_hash: str


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> NewApiKey:
    """A fresh key: ``da_live_`` + 43 URL-safe characters; its display prefix and its hash."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(secret=secret, prefix=secret[: len(API_KEY_PREFIX) + 6], key_hash=hash_api_key(secret))


def secret_key_path(settings: Settings) -> Path:
    """Where a generated secret is kept: beside the SQLite file, else in the working directory."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / SECRET_KEY_FILE
    return Path.cwd() / SECRET_KEY_FILE


def load_secret_key(settings: Settings) -> str:
    """``SECRET_KEY`` from the settings, else the stored one, else a new one stored now.

    Created with O_EXCL and mode 0600, so several workers starting together agree on one key.
    """
    if settings.secret_key:
        return settings.secret_key
    path = secret_key_path(settings)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it right now
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it or set SECRET_KEY") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
