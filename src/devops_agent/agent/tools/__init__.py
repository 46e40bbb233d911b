"""Cloud tools grouped by provider, and the toolbox that runs them for the agent."""

from __future__ import annotations

from devops_agent.billing.catalog import Catalog, CatalogError
from devops_agent.billing.models import ActionType
from devops_agent.config import Settings

from . import aws
from .registry import Cloud, Tool, Toolbox

# Every provider's tools: the registry the toolbox runs and the pricing file is checked against.
ALL_TOOLS: tuple[Tool, ...] = aws.TOOLS


def build_cloud(settings: Settings) -> Cloud:
    """The sandbox (default) or real AWS, as ``CLOUD`` says."""
    if settings.cloud == "aws":
        return aws.AwsCloud()
    return aws.SandboxCloud(endpoint_url=settings.sandbox_url)


def build_toolbox(cloud: Cloud) -> Toolbox:
    """Every provider's tools, bound to ``cloud``."""
    return Toolbox(ALL_TOOLS, cloud)


def check_catalog_tools(catalog: Catalog, tools: tuple[Tool, ...] = ALL_TOOLS) -> None:
    """Refuse a pricing file whose per-action keys name no tool (``CatalogError`` naming them).

    The catalog prices an action it does not list at ``default``, so a misspelled key in
    ``[costs]`` (``create_ec2_instanse = 5``) would silently sell the tool for 1 credit,
    and one in ``[size_costs]`` would drop its size prices. The billing package cannot
    know the agent's tools (it sits below the agent), so the app factory and the command
    line call this once at start, where both are known.
    """
    names = {tool.name for tool in tools}
    known = names | {ActionType.AGENT_MESSAGE.value}
    problems = []
    if unknown := sorted(set(catalog.costs) - known):
        problems.append(f"[costs] names no tool: {', '.join(unknown)}")
    if unknown := sorted(set(catalog.size_costs) - names):
        problems.append(f"[size_costs] names no tool: {', '.join(unknown)}")
    if problems:
        raise CatalogError(
            f"{'; '.join(problems)} (the tools are {', '.join(sorted(names))}; "
            f"`{ActionType.AGENT_MESSAGE.value}` prices the message itself, `default` anything unlisted)"
        )
