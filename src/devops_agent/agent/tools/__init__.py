"""Cloud tools grouped by provider, and the toolbox that runs them for the agent."""

from __future__ import annotations

from devops_agent.config import Settings

from . import aws
from .registry import Cloud, Toolbox


def build_cloud(settings: Settings) -> Cloud:
    """The sandbox (default) or real AWS, as ``CLOUD`` says."""
    if settings.cloud == "aws":
        return aws.AwsCloud()
    return aws.SandboxCloud(endpoint_url=settings.sandbox_url)


def build_toolbox(cloud: Cloud) -> Toolbox:
    """Every provider's tools, bound to ``cloud``."""
    return Toolbox(aws.TOOLS, cloud)
