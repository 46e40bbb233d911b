"""The admin's revenue recognition over HTTP: the worked month's figures, the CSV, who may read them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.analytics.test_admin_api import make_admin
from tests.billing.recognition_story import MARCH, at, expiring_packs, play_worked_month
from tests.web.conftest import make_client, register

PATHS = ("/api/admin/revenue/recognition", "/api/admin/revenue/recognition.csv")


async def test_only_admins_read_revenue_recognition(app: FastAPI, client: httpx.AsyncClient) -> None:
    async with make_client(app) as anonymous:
        for path in PATHS:
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"] == "unauthenticated"
    await register(client, "mallory")
    for path in PATHS:
        response = await client.get(path, params={"month": "2026-03"})
        assert response.status_code == 403, path
        assert response.json()["error"] == "forbidden"


async def test_the_worked_month_over_http(app: FastAPI, client: httpx.AsyncClient, tmp_path: Path) -> None:
    with expiring_packs(tmp_path):
        await play_worked_month(app.state.db)
    await make_admin(app, client)
    app.state.clock.now = at(4, 20, 12)

    response = await client.get("/api/admin/revenue/recognition", params={"month": "2026-03"})
    assert response.status_code == 200, response.text
    assert response.json() == MARCH  # exactly these keys, amounts as strings with two places

    # Without a month: the current one (April, by the app's clock).
    april = (await client.get("/api/admin/revenue/recognition")).json()
    assert (april["month"], april["deferred_revenue_start"], april["pack_revenue_recognized"]) == (
        "2026-04",
        "34.40",
        "0.80",
    )


async def test_the_csv_has_a_row_per_month_and_downloads(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    with expiring_packs(tmp_path):
        await play_worked_month(app.state.db)
    await make_admin(app, client)
    app.state.clock.now = at(4, 20, 12)

    response = await client.get("/api/admin/revenue/recognition.csv", params={"from": "2026-02", "to": "2026-04"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        'attachment; filename="revenue-recognition-2026-02-to-2026-04.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["month"] for r in rows] == ["2026-02", "2026-03", "2026-04"]
    assert rows[1] == MARCH
    assert [r["deferred_revenue_end"] for r in rows] == ["20.83", "34.40", "33.60"]

    # By default the twelve months ending with the current one.
    default = list(csv.DictReader(io.StringIO((await client.get("/api/admin/revenue/recognition.csv")).text)))
    assert [r["month"] for r in default][0::11] == ["2025-05", "2026-04"]
    assert len(default) == 12


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (PATHS[0], {"month": "2026-13"}, "month"),
        (PATHS[0], {"month": "March"}, "month"),
        (PATHS[0], {"month": "1999-12"}, "month"),
        (PATHS[1], {"from": "2026-3"}, "from"),
        (PATHS[1], {"to": "=cmd|' /C calc'!A0"}, "to"),
        (PATHS[1], {"from": "2026-04", "to": "2026-03"}, "from"),
        (PATHS[1], {"from": "2000-01", "to": "2026-03"}, "from"),
    ],
)
async def test_a_bad_month_is_a_clear_400(
    app: FastAPI, client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    await make_admin(app, client)
    response = await client.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_request", field)
    assert body["message"]
