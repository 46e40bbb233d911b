"""LLM backends of the agent: Claude (when ``ANTHROPIC_API_KEY`` is set) and the offline agent."""

from __future__ import annotations

from devops_agent.config import Settings

from .base import Backend, BackendError
from .claude import ClaudeBackend
from .offline import OfflineBackend

__all__ = ["Backend", "BackendError", "ClaudeBackend", "OfflineBackend", "build_backend"]


def build_backend(settings: Settings) -> Backend:
    """Claude when a key is configured, else the offline agent."""
    if settings.anthropic_api_key:
        return ClaudeBackend(
            api_key=settings.anthropic_api_key,
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url,
        )
    return OfflineBackend()
