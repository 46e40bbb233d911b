"""Settings read from the environment (and `.env`), in one typed object.

Every knob of DevOps Agent lives here so that the rest of the code asks one
place; defaults give the embedded setup that `make run` starts (SQLite,
offline agent, demo payments, sandbox cloud).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one DevOps Agent process."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite:///devops_agent.db"
    pricing_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = 5000
    secret_key: str | None = None
    cookie_secure: bool = False
    log_dir: Path = Path("logs")

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-sonnet-4-5"
    cloud: Literal["sandbox", "aws"] = "sandbox"
    # The sandbox's moto server (`devops-agent sandbox`); unset, `serve` starts one for its workers.
    sandbox_url: str | None = None
    # Run the agent's billable creates at once instead of asking the user to approve each one.
    auto_approve_actions: bool = False
    # The AWS principal whose credentials call sts:AssumeRole: customers' trust policies name it.
    aws_principal_arn: str = "arn:aws:iam::123456789012:root"

    stripe_secret_key: str | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    public_base_url: str = "http://127.0.0.1:5000"

    smtp_url: str | None = None
    email_from: str = "DevOps Agent <billing@devops-agent.local>"

    # Bearer token for GET /metrics; unset, /metrics answers requests from localhost only.
    metrics_token: str | None = None

    low_credit_threshold: int = Field(default=5, ge=0)
    # How long a chat turn in flight holds its charges without a sign of life (the process
    # renews the lease while it runs); past it, a retry or `devops-agent recover` refunds it.
    chat_turn_lease_seconds: int = Field(default=120, ge=1)
    # The same for a purchase or plan change left "in progress" under its Idempotency-Key.
    idempotency_lease_seconds: int = Field(default=120, ge=1)
    # New accounts per client address and hour (each gets the Free tier's credits); 0: no limit.
    registration_limit_per_hour: int = Field(default=10, ge=0)


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()
