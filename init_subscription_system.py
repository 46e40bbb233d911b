"""`devops-agent init` as a script: migrate, sync the pricing catalog, move users to Free, print a summary."""

from devops_agent.cli import init

if __name__ == "__main__":
    init()
