"""``aifr call`` and ``aifr run`` key=value parsing, typed by the input declarations."""

from __future__ import annotations

import pytest

from aifr.capabilities import capability
from aifr.cli.call import exit_status, parse_assignments
from aifr.cli.run import parse_inputs
from aifr.errors import ErrorCode, InputValidationError
from aifr.invocation import Result, Status
from aifr.workflows import load_workflow_text


@capability("demo.typed", operation="READ", risk="LOW")
def typed(
    name: str,
    count: int,
    ratio: float,
    flag: bool,
    tags: list[str],
    extra: dict[str, int] | None = None,
) -> None:
    """Typed inputs."""


SPEC = typed.spec


def test_values_follow_the_schema_types() -> None:
    parsed = parse_assignments(
        ["name=007", "count=3", "ratio=0.5", "flag=yes", 'tags=["a"]', 'extra={"k": 1}'], SPEC
    )
    assert parsed == {
        "name": "007",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "tags": ["a"],
        "extra": {"k": 1},
    }


def test_without_a_schema_json_values_parse_and_other_text_stays_text() -> None:
    assert parse_assignments(["a=1", "b=hello", "c=[1]", "d=null", 'e="quoted"'], None) == {
        "a": 1,
        "b": "hello",
        "c": [1],
        "d": None,
        "e": "quoted",
    }


def test_an_input_given_twice_is_refused_rather_than_the_last_one_winning() -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_assignments(["name=a.txt", "count=2", "name=b.txt"], SPEC)
    assert caught.value.errors[0].path == "name"
    assert caught.value.errors[0].code == "duplicate"
    assert "given twice" in caught.value.message


def test_a_workflow_input_given_twice_is_refused_too() -> None:
    spec = load_workflow_text(
        "name: w\ninputs: {path: {type: string}, n: {type: integer}}\n"
        "steps: [{id: a, capability: x.y}]\n"
    )
    assert parse_inputs(["path=a", "n=2"], spec) == {"path": "a", "n": 2}
    with pytest.raises(InputValidationError) as caught:
        parse_inputs(["path=a", "path=b"], spec)
    assert caught.value.errors[0].path == "path"
    assert "given twice" in caught.value.message


def test_an_equals_sign_inside_the_value_is_kept() -> None:
    assert parse_assignments(["name=a=b"], SPEC) == {"name": "a=b"}


@pytest.mark.parametrize("pair", ["count=three", "flag=maybe", "tags=a,b", "novalue", "=x"])
def test_values_that_do_not_parse_are_input_errors_naming_the_key(pair: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_assignments([pair], SPEC)
    assert caught.value.code is ErrorCode.INPUT_INVALID
    assert caught.value.errors[0].path == (pair.partition("=")[0] if "=" in pair[1:] else pair)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (Status.OK, None, 0),
        (Status.DENIED, ErrorCode.POLICY_DENIED, 3),
        (Status.PENDING_APPROVAL, ErrorCode.APPROVAL_REQUIRED, 4),
        (Status.FAILED, ErrorCode.EXECUTION_FAILED, 1),
        (Status.FAILED, ErrorCode.EXECUTION_TIMEOUT, 6),
        (Status.FAILED, ErrorCode.CAPABILITY_NOT_FOUND, 5),
        (Status.FAILED, ErrorCode.INPUT_INVALID, 2),
        (Status.FAILED, ErrorCode.APPROVAL_CONSUMED, 1),
        (Status.FAILED, ErrorCode.EXECUTION_REFUSED, 1),
    ],
)
def test_exit_status_distinguishes_denied_pending_and_failed(
    status: Status, code: ErrorCode | None, expected: int
) -> None:
    from aifr.errors import AifrError

    error = AifrError("x", code=code) if code is not None else None
    result = Result(status=status, request_id="r", capability_id="c", principal="p", error=error)
    assert exit_status(result) == expected


def test_print_result_shows_status_markers_verbatim_and_hook_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aifr.cli.call import print_result
    from aifr.errors import AifrError
    from aifr.invocation import HookFailure

    failure = HookFailure("notify[x]", "after", "global", "execution.hook_failed", "boom [x]", 1)
    error = AifrError("bad [secret:TOKEN]", code=ErrorCode.EXECUTION_FAILED)
    result = Result(
        status=Status.FAILED,
        request_id="r",
        capability_id="c",
        principal="p",
        error=error,
        audit_id="au-1",
        hook_failures=(failure,),
    )
    print_result(result, as_json=False)
    out, err = capsys.readouterr()
    assert "failed c" in out and "audit record: au-1" in out
    assert "bad [secret:TOKEN]" in err
    assert "hook failed notify[x] (after, execution.hook_failed): boom [x]" in err
