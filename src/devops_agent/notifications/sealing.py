"""Sealing the secret of an email that waits in the outbox (an invitation's token).

An invitation's link is a bearer secret: whoever holds it can join the organization as
the invited address. The database keeps only its hash (``organization_invitations``)
and, until the email is delivered, the token encrypted with a key derived from the
application's secret (``SECRET_KEY``), which the database does not hold. A copy of the
database alone therefore never yields a usable link. After delivery the sealed token is
dropped; a key changed in between makes the email fail (send the invitation again).

Fernet (``cryptography``) is authenticated encryption with a timestamp; nothing here
invents a cipher.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"devops-agent email outbox sealed secrets"


class Unsealable(Exception):
    """The sealed value was made with another key (or altered): the secret is lost."""


class Sealer:
    """Encrypts and decrypts outbox secrets with a key derived from the application's secret."""

    def __init__(self, secret: str | None) -> None:
        # Without a configured secret the key lives as long as the process: a restart
        # leaves pending invitation emails unsendable, which a resend repairs.
        material = (secret or secrets.token_urlsafe(48)).encode()
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(material)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise Unsealable("the sealed secret was made with another key") from None
