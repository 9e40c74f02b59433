"""What a principal's name may be: the identity every decision and record is keyed on.

A principal names who acts, in policy matches, approvals and the audit ledger. An empty
name cannot be recorded at all (the call would run and then fail to be audited); one
with surrounding spaces would pass for another (``"alice "`` and ``"alice"``); control
characters (a newline) would forge lines in ``aifr audit tail`` and in logs. Each is
refused before anything runs.
"""

from __future__ import annotations

from aifr.errors import FieldError, InputValidationError

__all__ = ["INVALID_PRINCIPAL", "MAX_PRINCIPAL_LENGTH", "check_principal", "principal_problem"]

MAX_PRINCIPAL_LENGTH = 256
INVALID_PRINCIPAL = "(invalid principal)"
"""Who the audit record of a call refused for its principal names (the name given is kept
in its details): the refusal is recorded, and no record is keyed on a name that is not one."""


def principal_problem(name: object) -> str | None:
    """Why ``name`` cannot be a principal, or ``None`` when it can."""
    if not isinstance(name, str) or not (stripped := name.strip()):
        return "is empty"
    if len(stripped) != len(name):
        return "has leading or trailing whitespace"
    if not name.isprintable():
        return "holds a control or invisible character"
    if len(name) > MAX_PRINCIPAL_LENGTH:
        return f"is longer than {MAX_PRINCIPAL_LENGTH} characters"
    return None


def check_principal(name: object, *, field: str = "principal") -> None:
    """Refuse a name that cannot identify a principal.

    Raises:
        InputValidationError: the name is empty, padded, holds a control or invisible
            character, or is too long; the error names ``field``.
    """
    problem = principal_problem(name)
    if problem is not None:
        shown = repr(name)[:80]
        raise InputValidationError(
            f"{field} {shown} {problem}",
            errors=[
                FieldError(
                    path=field,
                    code="principal",
                    message=f"{field} {problem}",
                    expected="a non-empty printable name without surrounding spaces",
                    received=shown,
                )
            ],
        )
