"""What a principal's name may be."""

from __future__ import annotations

import pytest

from aifr.errors import ErrorCode, InputValidationError
from aifr.invocation import check_principal
from aifr.invocation.identity import MAX_PRINCIPAL_LENGTH, principal_problem


@pytest.mark.parametrize(
    "name", ["alice", "agent-7", "svc:deploy@prod", "José Núñez", "a" * MAX_PRINCIPAL_LENGTH]
)
def test_ordinary_names_are_principals(name: str) -> None:
    assert principal_problem(name) is None
    check_principal(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (" alice", "has leading or trailing whitespace"),
        ("alice\t", "has leading or trailing whitespace"),
        ("ali\nce", "holds a control or invisible character"),
        ("ali\u200bce", "holds a control or invisible character"),
        ("ali\x1b[31mce", "holds a control or invisible character"),
        ("a" * (MAX_PRINCIPAL_LENGTH + 1), "is longer than 256 characters"),
        (None, "is empty"),
    ],
)
def test_names_that_are_no_names_are_refused_saying_why(name: object, problem: str) -> None:
    assert principal_problem(name) == problem
    with pytest.raises(InputValidationError) as refused:
        check_principal(name, field="approver")
    assert refused.value.code is ErrorCode.INPUT_INVALID
    assert refused.value.errors[0].path == "approver"
    assert problem in refused.value.message
