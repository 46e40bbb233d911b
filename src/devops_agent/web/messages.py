"""Sentences a person can act on, for input that fails its schema.

Pydantic says "String should match pattern '^[A-Za-z0-9_.\\-]{3,32}$'"; a person needs
"Use 3 to 32 letters, digits, dot, dash or underscore." The 422 body keeps what a
program needs (``field``, ``location``, ``type`` and the constraint in ``ctx``) and
carries this sentence as ``message``, which the pages show next to the field.
"""

from __future__ import annotations

from typing import Any

# What a field must look like, said once per field name (any form that has the field).
FIELD_RULES: dict[str, str] = {
    "username": "Use 3 to 32 letters, digits, dot, dash or underscore.",
    "email": "Enter an email address like name@example.com.",
    "password": "Use at least 8 characters.",
    "new_password": "Use at least 8 characters.",
    "message": "Write a message of up to 8,000 characters.",
    "title": "Use 1 to 200 characters.",
    "name": "Use 1 to 100 characters.",
}

# Field names as a sentence may say them.
FIELD_NAMES: dict[str, str] = {
    "tier_id": "plan",
    "pack_size": "pack",
    "org_id": "team",
    "conversation_id": "conversation",
    "max_credits": "credit limit",
    "monthly_cap": "monthly cap",
}

_SIMPLE: dict[str, str] = {
    "missing": "This field is required.",
    "string_type": "Enter text here.",
    "int_type": "Enter a whole number.",
    "int_parsing": "Enter a whole number.",
    "int_from_float": "Enter a whole number.",
    "float_type": "Enter a number.",
    "float_parsing": "Enter a number.",
    "decimal_parsing": "Enter a number.",
    "bool_type": "Choose yes or no.",
    "bool_parsing": "Choose yes or no.",
    "extra_forbidden": "This field is not accepted here.",
    "datetime_parsing": "Enter a date and time like 2026-01-31T12:00:00Z.",
    "datetime_type": "Enter a date and time like 2026-01-31T12:00:00Z.",
    "timezone_aware": "Give the time zone too, like 2026-12-31T23:59:59Z.",
    "date_parsing": "Enter a date like 2026-01-31.",
    "date_from_datetime_parsing": "Enter a date like 2026-01-31.",
    "dict_type": "This must be a set of named values.",
    "list_type": "This must be a list.",
    "string_not_ascii": "Use plain letters and digits only.",
}


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def sentence(error_type: str, field: str, ctx: dict[str, Any] | None, raw: str = "") -> str:
    """The sentence for one validation error of ``field`` (its last name part)."""
    ctx = ctx or {}
    rule = FIELD_RULES.get(field)
    if error_type == "missing":
        return _SIMPLE["missing"]
    if error_type == "string_pattern_mismatch":
        return rule or "This is not in the expected format."
    if error_type == "string_too_short":
        if ctx.get("min_length") == 1:
            return "This field cannot be empty."
        return rule or f"Use at least {_number(ctx.get('min_length'))} characters."
    if error_type == "string_too_long":
        return rule or f"Use at most {_number(ctx.get('max_length'))} characters."
    if error_type in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        word = "at least" if error_type == "greater_than_equal" else "more than"
        return f"Enter a number of {word} {_number(bound)}."
    if error_type in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        word = "at most" if error_type == "less_than_equal" else "less than"
        return f"Enter a number of {word} {_number(bound)}."
    if error_type in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"Choose one of: {expected}." if expected else "Choose one of the offered values."
    if error_type in ("value_error", "assertion_error"):
        # Our own validators raise sentences already; Pydantic prefixes them.
        return raw.removeprefix("Value error, ").removeprefix("Assertion failed, ") or "This value is not valid."
    if error_type in _SIMPLE:
        return _SIMPLE[error_type]
    name = FIELD_NAMES.get(field, field.replace("_", " "))
    return f"This {name} is not valid." if name else "This value is not valid."


def machine_ctx(ctx: dict[str, Any] | None) -> dict[str, Any]:
    """The constraint values a program may read (plain JSON values only)."""
    return {k: v for k, v in (ctx or {}).items() if isinstance(v, (str, int, float))}


def summary(details: list[dict[str, Any]]) -> str:
    """The body's ``message``: the first problem, and how many more there are."""
    if not details:
        return "Some of the information sent is not valid."
    first = details[0]
    name = FIELD_NAMES.get(first["field"].split(".")[-1], first["field"].split(".")[-1].replace("_", " "))
    text = f"Check the {name}: {first['message']}" if name else first["message"]
    more = len(details) - 1
    if more:
        text += f" ({more} more {'field needs' if more == 1 else 'fields need'} a fix.)"
    return text
