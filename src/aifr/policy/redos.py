r"""Refuse policy regexes that can backtrack catastrophically on agent-controlled input.

A ``regex`` input condition is written by a trusted policy author but matched against
inputs an agent chooses. Python's ``re`` backtracks, so a pattern with a quantified
group that itself holds an open-ended quantifier (``(a+)+``, ``(\w+\s?)*``) can take
exponential time on a crafted string of a few dozen characters, and the policy engine is
the gatekeeper every call waits on. Such patterns are refused at load with a message
that names the fix: a possessive quantifier (``a++``) or an atomic group (``(?>...)``),
which never give back what they matched (both in ``re`` since Python 3.11).

The check is structural (a repetition inside an open-ended or many-times repetition),
the rule most ReDoS linters start from; it does not prove a pattern safe (overlapping
alternatives such as ``(a|a)*`` pass), but it rules out the classic exponential shape.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["backtracking_hazard"]

# re's own parser (``sre_parse`` before 3.11, deprecated under that name since): the
# tree ``re.compile`` builds from, so this check reads a pattern exactly as re does.
sre_parser: Any = importlib.import_module("re._parser")
sre_constants: Any = importlib.import_module("re._constants")

_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)
_UNBOUNDED = sre_constants.MAXREPEAT
# A repetition bounded above this many times still multiplies the work of what it holds
# (``(.*a){20}`` is polynomial of degree 20), so it counts as open-ended.
_LARGE_BOUND = 10


def backtracking_hazard(pattern: str) -> str | None:
    """Why ``pattern`` can backtrack exponentially, or ``None`` when it has no such shape.

    The pattern must already compile (``re.error`` is the caller's business).
    """
    found = _nested_repeat(sre_parser.parse(pattern), outer=False)
    if found is None:
        return None
    return (
        f"nested quantifiers ({found}) can backtrack exponentially on crafted input; "
        "make the inner or outer repetition possessive (e.g. 'a++', '(?:...)*+') or "
        "wrap it in an atomic group '(?>...)'"
    )


def _nested_repeat(items: Any, *, outer: bool) -> str | None:
    """The first repetition found inside an open-ended repetition, described."""
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            if outer and high > 1:
                return f"a repetition {{{low},{'' if high == _UNBOUNDED else high}}} inside one"
            found = _nested_repeat(body, outer=outer or high > _LARGE_BOUND)
            if found is not None:
                return found
        elif op is sre_constants.SUBPATTERN:
            found = _nested_repeat(arg[-1], outer=outer)
            if found is not None:
                return found
        elif op is sre_constants.BRANCH:
            for branch in arg[1]:
                found = _nested_repeat(branch, outer=outer)
                if found is not None:
                    return found
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            found = _nested_repeat(arg[1], outer=outer)
            if found is not None:
                return found
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into what they matched.
    return None
