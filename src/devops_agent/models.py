"""Import every table module so that ``Base.metadata`` knows the whole schema."""

from __future__ import annotations

import importlib

MODEL_MODULES = (
    "devops_agent.billing.models",
    "devops_agent.web.models",
    "devops_agent.agent.models",
    "devops_agent.billing.org_models",
    "devops_agent.payments.models",
    "devops_agent.notifications.models",
    "devops_agent.billing.audit",
    "devops_agent.billing.books",
    "devops_agent.agent.cloud_models",
)


def load_all_models() -> None:
    """Import each domain's models (migrations and test fixtures need all of them)."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
