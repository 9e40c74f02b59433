"""``@capability``: schemas from type hints, docs from docstrings, fingerprints from source."""

from __future__ import annotations

import asyncio
import enum
import uuid
from typing import Annotated, Literal

import pytest
from pydantic import AnyUrl, BaseModel, EmailStr, Field

from aifr import CallInfo, Capability, ErrorCode, OperationType, RiskLevel, capability
from aifr.errors import CapabilityError, InputValidationError, OutputValidationError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


class Person(BaseModel):
    name: str
    address: Address


@capability("demo.profile", operation="WRITE", risk="MEDIUM", tags=["demo", "people"])
def save_profile(
    person: Person,
    color: Color = Color.RED,
    nickname: str | None = None,
    age: Annotated[int, Field(ge=0, le=150)] = 30,
    mode: Literal["fast", "safe"] = "safe",
) -> dict[str, str]:
    """Save a person's profile.

    Profiles are kept forever.

    Args:
        person: The person to save.
        color: Favourite colour.
        nickname: Optional nickname.
        age: Age in years.
        mode: How to save.
    """
    return {"saved": person.name}


def test_input_schema_covers_nested_models_optionals_enums_and_defaults() -> None:
    schema = save_profile.spec.input_schema
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert schema["required"] == ["person"]
    assert properties["person"] == {"$ref": "#/$defs/Person", "description": "The person to save."}
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    assert defs["Address"]["properties"]["zip_code"]["pattern"] == r"^\d{5}$"  # type: ignore[index,call-overload]  # nested JSON
    assert defs["Color"]["enum"] == ["red", "blue"]  # type: ignore[index,call-overload]  # nested JSON
    assert properties["color"]["default"] == "red"  # type: ignore[index,call-overload]  # nested JSON
    assert {"type": "null"} in properties["nickname"]["anyOf"]  # type: ignore[index,call-overload,operator]  # nested JSON
    assert properties["age"]["minimum"] == 0  # type: ignore[index,call-overload]  # nested JSON
    assert properties["age"]["maximum"] == 150  # type: ignore[index,call-overload]  # nested JSON
    assert properties["mode"]["enum"] == ["fast", "safe"]  # type: ignore[index,call-overload]  # nested JSON
    assert schema["additionalProperties"] is False


def test_descriptions_come_from_the_docstring() -> None:
    spec = save_profile.spec
    assert spec.description == "Save a person's profile. Profiles are kept forever."
    assert spec.input_schema["properties"]["age"]["description"] == "Age in years."  # type: ignore[index,call-overload]  # nested JSON
    assert spec.name == "Profile"
    assert spec.tags == ("demo", "people")


def test_output_schema_comes_from_the_return_annotation() -> None:
    assert save_profile.spec.output_schema == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }


def test_validated_inputs_become_handler_arguments() -> None:
    kwargs = save_profile.validate_inputs(
        {
            "person": {"name": "Ada", "address": {"street": "Main", "zip_code": "12345"}},
            "color": "blue",
        }
    )
    assert kwargs["color"] is Color.BLUE
    assert isinstance(kwargs["person"], Person)
    assert save_profile.handler is not None
    assert save_profile.validate_output(save_profile.handler(**kwargs)) == {"saved": "Ada"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_for_a_number_input(value: float) -> None:
    @capability("demo.scale", operation="READ", risk="LOW")
    def scale(factor: float, factors: list[float] | None = None) -> float:
        return factor

    for inputs in ({"factor": value}, {"factor": 1.0, "factors": [2.0, value]}):
        with pytest.raises(InputValidationError) as caught:
            scale.validate_inputs(inputs)
        (error,) = caught.value.errors
        assert error.path in ("factor", "factors.1")
        assert error["received"] == repr(value)  # echoed as text: JSON has no NaN


def test_a_deeply_nested_received_value_is_echoed_cut_short() -> None:
    @capability("demo.tag", operation="READ", risk="LOW")
    def tag(tags: list[str]) -> None:
        return None

    deep: list[object] = []
    for _ in range(800):
        deep = [deep]
    with pytest.raises(InputValidationError) as caught:
        tag.validate_inputs({"tags": deep, "x": 10**5000})
    received = {e.path: e["received"] for e in caught.value.errors}
    depth, value = 0, received["tags.0"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert depth < 10 and value == "..."
    assert received["x"] == "<large integer>"


def test_nested_validation_errors_carry_dotted_paths() -> None:
    with pytest.raises(InputValidationError) as caught:
        save_profile.validate_inputs(
            {"person": {"name": "Ada", "address": {"street": "Main", "zip_code": "12"}}, "age": -1}
        )
    errors = {e.path: e for e in caught.value.errors}
    assert errors["person.address.zip_code"].code == "pattern"
    assert errors["person.address.zip_code"]["expected"] == {"pattern": r"^\d{5}$"}
    assert errors["person.address.zip_code"]["received"] == "12"
    assert errors["age"].code == "min"
    assert caught.value.code is ErrorCode.INPUT_INVALID


@capability("demo.constraints", operation="READ", risk="LOW")
def constrained(
    email: EmailStr,
    site: AnyUrl,
    token: uuid.UUID,
    name: Annotated[str, Field(min_length=2, max_length=5)],
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5,
) -> None:
    """Exercise every constraint kind."""


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("email", "not-an-email", "email"),
        ("site", "not a url", "url"),
        ("token", "1234", "uuid"),
        ("name", "x", "length"),
        ("name", "toolong", "length"),
        ("ratio", 0, "min"),
        ("ratio", 1, "max"),
        ("ratio", "abc", "type"),
    ],
)
def test_each_constraint_kind_has_its_own_error_code(field: str, value: object, code: str) -> None:
    inputs: dict[str, object] = {
        "email": "a@example.com",
        "site": "https://example.com",
        "token": str(uuid.uuid4()),
        "name": "abc",
        field: value,
    }
    with pytest.raises(InputValidationError) as caught:
        constrained.validate_inputs(inputs)
    assert [(e.path, e.code) for e in caught.value.errors] == [(field, code)]


def test_missing_and_unexpected_fields_are_reported_together() -> None:
    with pytest.raises(InputValidationError) as caught:
        constrained.validate_inputs({"surprise": 1})
    codes = sorted({e.code for e in caught.value.errors})
    assert codes == ["required", "unexpected"]
    assert {e.path for e in caught.value.errors if e.code == "required"} == {
        "email",
        "site",
        "token",
        "name",
    }


def test_non_object_inputs_are_refused() -> None:
    with pytest.raises(InputValidationError) as caught:
        constrained.validate_inputs(["not", "a", "dict"])  # type: ignore[arg-type]  # the bad input under test
    assert caught.value.errors[0].code == "type"


@capability("demo.count", operation="READ", risk="LOW")
def count(n: int) -> int:
    """Return n."""
    return n


def test_output_not_matching_the_return_annotation_is_an_output_error() -> None:
    with pytest.raises(OutputValidationError) as caught:
        count.validate_output("many")
    assert caught.value.code is ErrorCode.OUTPUT_INVALID


@capability("demo.blob", operation="READ", risk="LOW")
def blob() -> bytes:
    return b"\xff\xfe"


@capability("demo.loose", operation="READ", risk="LOW")
def loose():  # type: ignore[no-untyped-def]  # no annotation: any JSON
    return {"ok": True}


@pytest.mark.parametrize(
    ("cap", "value", "reason"),
    [
        (blob, b"\xff\xfe", "bytes that are not UTF-8"),
        (loose, b"\xff\xfe", "bytes that are not UTF-8"),
        (loose, {"x": object()}, "cannot be sent as JSON"),
    ],
)
def test_a_result_json_cannot_carry_is_an_output_error_naming_why(
    cap: Capability, value: object, reason: str
) -> None:
    with pytest.raises(OutputValidationError) as caught:
        cap.validate_output(value)

    assert caught.value.code is ErrorCode.OUTPUT_INVALID
    assert reason in caught.value.errors[0]["message"]
    assert blob.validate_output(b"text") == "text"


@capability("demo.async", operation="READ", risk="LOW")
async def fetch(call: CallInfo, key: str) -> str:
    """Fetch a value asynchronously.

    Args:
        call: Filled by the runtime.
        key: What to fetch.
    """
    return f"{call.principal}:{key}"


def test_async_handlers_are_supported_and_call_info_is_excluded_from_the_schema() -> None:
    assert fetch.is_async
    assert fetch.call_info_param == "call"
    properties = fetch.spec.input_schema["properties"]
    assert isinstance(properties, dict)
    assert list(properties) == ["key"]
    result = asyncio.run(fetch(CallInfo(request_id="r1", principal="alice"), key="k"))
    assert result == "alice:k"
    assert fetch.spec.output_schema == {"type": "string"}


def test_undeclared_risk_is_treated_as_high() -> None:
    @capability("demo.unknown", operation="WRITE")
    def unknown(x: int) -> None:
        """Do something unknown."""

    assert unknown.spec.risk is None
    assert unknown.spec.effective_risk is RiskLevel.HIGH


@pytest.mark.parametrize(
    "extra", [{"requires_approval": True}, {"justification": "because"}], ids=["approval", "why"]
)
def test_risk_details_without_a_declared_risk_are_refused_not_dropped(
    extra: dict[str, object],
) -> None:
    with pytest.raises(CapabilityError) as caught:
        capability("demo.half_declared", operation="WRITE", **extra)  # type: ignore[arg-type]  # kwargs under test
    assert caught.value.code is ErrorCode.CAPABILITY_INVALID
    assert "needs a declared risk level" in caught.value.message
    assert caught.value.details["capability_id"] == "demo.half_declared"


def test_var_args_are_refused_with_a_capability_error() -> None:
    with pytest.raises(CapabilityError) as caught:

        @capability("demo.varargs", operation="READ", risk="LOW")
        def bad(*items: int) -> None:
            """Take anything."""

    assert caught.value.code is ErrorCode.CAPABILITY_INVALID
    assert "items" in caught.value.message


def test_fingerprint_changes_when_the_handler_source_changes() -> None:
    def make(body: int) -> Capability:
        namespace: dict[str, object] = {"capability": capability}
        source = (
            "@capability('demo.fp', operation='READ', risk='LOW')\n"
            f"def f(x: int) -> int:\n    return x + {body}\n"
        )
        exec(compile(source, f"<fp{body}>", "exec"), namespace)  # noqa: S102  # test builds two handler versions
        made = namespace["f"]
        assert isinstance(made, Capability)
        return made

    first, second, again = make(1), make(2), make(1)
    assert first.spec.fingerprint != second.spec.fingerprint
    assert first.spec.fingerprint == again.spec.fingerprint


def test_fingerprint_is_stable_and_covers_the_spec() -> None:
    spec = count.spec
    assert len(spec.fingerprint) == 64
    assert spec.model_copy(update={"fingerprint": ""}).compute_fingerprint() == spec.fingerprint
    changed = spec.model_dump()
    changed.update(description="something else", fingerprint="")
    assert type(spec).model_validate(changed).fingerprint != spec.fingerprint


def test_operation_is_coerced_from_strings() -> None:
    assert count.spec.operation_type is OperationType.READ
