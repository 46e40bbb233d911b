"""The pricing file names the agent's tools: a misspelled one stops the start, not a silent 1 credit.

The catalog prices any action it does not list at ``default`` (1 credit), so before
this check ``create_ec2_instanse = 5`` sold EC2 launches for 1 credit without a word.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devops_agent.agent.tools import check_catalog_tools
from devops_agent.billing.catalog import DEFAULT_PRICING_FILE, CatalogError, load_catalog
from devops_agent.config import Settings, get_settings
from devops_agent.web.app import create_app
from devops_agent.web.server import run_server


def _misspelled(tmp_path: Path, right: str, wrong: str) -> Path:
    text = DEFAULT_PRICING_FILE.read_text()
    assert right in text
    path = tmp_path / "pricing.toml"
    path.write_text(text.replace(right, wrong))
    return path


@pytest.fixture
def bad_costs(tmp_path: Path) -> Path:
    return _misspelled(tmp_path, "create_ec2_instance = 5", "create_ec2_instanse = 5")


@pytest.fixture
def env_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_shipped_catalog_names_only_real_tools() -> None:
    check_catalog_tools(load_catalog())


def test_a_misspelled_cost_key_is_named(bad_costs: Path) -> None:
    with pytest.raises(CatalogError, match=r"\[costs\] names no tool: create_ec2_instanse") as caught:
        check_catalog_tools(load_catalog(bad_costs))
    assert "create_ec2_instance" in str(caught.value)  # the message lists the real names


def test_a_misspelled_size_costs_table_is_named(tmp_path: Path) -> None:
    path = _misspelled(tmp_path, "[size_costs.create_rds_instance]", "[size_costs.create_rds]")
    with pytest.raises(CatalogError, match=r"\[size_costs\] names no tool: create_rds\b"):
        check_catalog_tools(load_catalog(path))


def test_the_app_does_not_start_on_a_misspelled_tool(bad_costs: Path, tmp_path: Path) -> None:
    config = Settings(  # type: ignore[call-arg]
        _env_file=None,
        secret_key="catalog-check",
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        pricing_file=bad_costs,
    )
    with pytest.raises(CatalogError, match="create_ec2_instanse"):
        create_app(config)


def test_serve_refuses_a_misspelled_tool_before_starting_workers(
    bad_costs: Path, env_with: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_with.setenv("PRICING_FILE", str(bad_costs))
    with pytest.raises(SystemExit) as stopped:
        run_server(workers=1)
    assert stopped.value.code == 2
    assert "create_ec2_instanse" in capsys.readouterr().err
