"""Bad input answers with sentences a person can act on; ``details`` stays machine-readable."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.web.conftest import register

PYDANTIC_WORDING = re.compile(r"String should|should match pattern|Input should|Field required|\^\[|\]\{|\\\\")


def _by_field(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["field"]: d for d in body["details"]}


def _no_machine_wording(body: dict[str, Any]) -> None:
    for text in [body["message"], *(d["message"] for d in body.get("details", []))]:
        assert not PYDANTIC_WORDING.search(text), text


async def test_registration_errors_are_sentences(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register", json={"username": "a!", "email": "not-an-email", "password": "short"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    fields = _by_field(body)
    assert fields["username"]["message"] == "Use 3 to 32 letters, digits, dot, dash or underscore."
    assert fields["email"]["message"] == "Enter an email address like name@example.com."
    assert fields["password"]["message"] == "Use at least 8 characters."
    assert (
        body["message"]
        == "Check the username: Use 3 to 32 letters, digits, dot, dash or underscore. (2 more fields need a fix.)"
    )
    _no_machine_wording(body)
    # What programs read stays: the field, where it was, the error type and its constraint.
    assert (fields["username"]["location"], fields["username"]["type"]) == ("body", "string_pattern_mismatch")
    assert fields["password"]["ctx"] == {"min_length": 8}


async def test_login_and_chat_errors_are_sentences(client: httpx.AsyncClient) -> None:
    missing = await client.post("/api/auth/login", json={"username": "someone"})
    assert missing.status_code == 422
    assert _by_field(missing.json())["password"]["message"] == "This field is required."
    _no_machine_wording(missing.json())

    await register(client)
    empty = await client.post("/api/chat", json={"message": "", "colour": "red"})
    assert empty.status_code == 422
    fields = _by_field(empty.json())
    assert fields["message"]["message"] == "This field cannot be empty."
    assert fields["colour"]["message"] == "This field is not accepted here."
    _no_machine_wording(empty.json())


async def test_query_errors_are_sentences(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.get("/api/usage/history", params={"limit": 0})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Check the limit: Enter a number of at least 1."
    assert body["details"][0]["ctx"] == {"ge": 1}
    _no_machine_wording(body)
