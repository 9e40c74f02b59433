"""A spec's JSON Schema is compiled once and its validator reused, with the same verdicts."""

from __future__ import annotations

from typing import Any

from aifr.capabilities import schema as schema_module
from aifr.capabilities.schema import validate_against_schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string"}, "url": {"type": "string", "format": "url"}},
    "required": ["message"],
}


def test_repeated_validation_reuses_the_validator_and_keeps_reporting_problems() -> None:
    assert validate_against_schema({"message": "hi"}, SCHEMA) == []
    first = schema_module._validator(SCHEMA)
    for _ in range(3):
        assert validate_against_schema({"message": "hi"}, SCHEMA) == []
        problems = validate_against_schema({"message": 3, "url": "not a url"}, SCHEMA)
        assert sorted(p["code"] for p in problems) == ["type", "url"]
        assert [p["code"] for p in validate_against_schema({}, SCHEMA)] == ["required"]
    assert schema_module._validator(SCHEMA) is first


def test_an_equal_schema_built_anew_is_validated_against_its_own_content() -> None:
    strict = {**SCHEMA, "additionalProperties": False}
    assert validate_against_schema({"message": "a", "extra": 1}, SCHEMA) == []
    problems = validate_against_schema({"message": "a", "extra": 1}, strict)
    assert problems and schema_module._validator(strict) is not schema_module._validator(SCHEMA)
