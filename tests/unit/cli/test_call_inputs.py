"""``aifr call`` inputs: strict JSON and values typed by the input schema."""

from __future__ import annotations

import pytest

from aifr import capability
from aifr.cli.call import parse_assignments
from aifr.cli.json_input import MAX_INPUT_DEPTH, JsonInputError, loads_strict
from aifr.errors import ErrorCode, InputValidationError


@capability("demo.settings", operation="READ", risk="LOW")
def settings(
    name: str, count: int = 1, ratio: float = 1.0, notify: bool | None = None
) -> dict[str, str]:
    """Change settings."""
    return {"name": name}


def test_plain_json_values_parse() -> None:
    assert loads_strict('{"a": [1, 2.5, true, null, "x"]}') == {"a": [1, 2.5, True, None, "x"]}


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[Infinity]",
        '{"x": -Infinity}',
        "1e999",
        '{"a": 1, "a": 2}',
        '{"o": {"k": 1, "k": 1}}',
        "9" * 5000,
        "[" * (MAX_INPUT_DEPTH + 1) + "]" * (MAX_INPUT_DEPTH + 1),
        "[" * 50_000 + "]" * 50_000,
        "{oops",
    ],
)
def test_what_json_does_not_allow_is_refused(text: str) -> None:
    with pytest.raises(JsonInputError):
        loads_strict(text)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    text = "[" * MAX_INPUT_DEPTH + "]" * MAX_INPUT_DEPTH
    assert loads_strict(text) is not None


@pytest.mark.parametrize(
    "pair", ["count=NaN", "ratio=Infinity", "ratio=1e999", "count=" + "9" * 5000]
)
def test_a_number_json_cannot_hold_is_bad_input(pair: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_assignments(["name=a", pair], settings.spec)
    assert caught.value.code is ErrorCode.INPUT_INVALID


def test_null_clears_an_optional_boolean_and_strings_stay_text() -> None:
    parsed = parse_assignments(["name=null", "notify=null", "count=3"], settings.spec)
    assert parsed == {"name": "null", "notify": None, "count": 3}
