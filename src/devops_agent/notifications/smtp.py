"""SMTP delivery: ``SMTP_URL`` parsing and a send that retries what is worth retrying.

``SMTP_URL`` forms: ``smtp://host:25`` (plain), ``smtp+starttls://user:pass@host:587``,
``smtps://user:pass@host:465`` (TLS from the start); ``?timeout=10`` sets the socket
timeout in seconds. A temporary failure (a 4xx reply, a dropped or refused connection)
is retried with exponential backoff; a permanent one (5xx: bad address, rejected
content) is not, because sending it again cannot help.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class SmtpUrlError(ValueError):
    """``SMTP_URL`` cannot be understood."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # "plain", "starttls" or "tls"
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0

    def __repr__(self) -> str:  # never print the password into a log
        return f"SmtpConfig({self.security}://{self.host}:{self.port}, user={self.username!r})"


def parse_smtp_url(url: str) -> SmtpConfig:
    """Read ``SMTP_URL`` into a config; raise ``SmtpUrlError`` with the reason."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise SmtpUrlError(f"SMTP_URL scheme must be one of {', '.join(DEFAULT_PORTS)}, not {scheme!r}")
    if not parts.hostname:
        raise SmtpUrlError("SMTP_URL needs a host, e.g. smtp://127.0.0.1:2525")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise SmtpUrlError(f"SMTP_URL has a bad port: {exc}") from exc
    query = parse_qs(parts.query)
    try:
        timeout = float(query.get("timeout", ["10"])[0])
    except ValueError as exc:
        raise SmtpUrlError("SMTP_URL timeout must be a number of seconds") from exc
    security = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}[scheme]
    return SmtpConfig(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether sending again later may succeed (4xx replies and network trouble)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError | OSError)


def _send_once(config: SmtpConfig, message: EmailMessage) -> None:
    smtp: smtplib.SMTP
    if config.security == "tls":
        smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with smtp:
        if config.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.send_message(message)


def send(config: SmtpConfig, message: EmailMessage, *, attempts: int = 3, backoff: float = 1.0) -> int:
    """Deliver ``message``, retrying temporary failures; return the attempts used.

    Blocking (``smtplib``): the dispatcher runs it in a worker thread. Raises the
    last error when every attempt failed or the failure is permanent.
    """
    used = 0
    for attempt in Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=30 * backoff),
        reraise=True,
    ):
        with attempt:
            used += 1
            _send_once(config, message)
    return used
