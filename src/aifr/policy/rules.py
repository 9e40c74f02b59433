"""Compiled rules: glob sets, input conditions and the ``when`` of a rule.

Everything here is built once when a policy loads (globs and regular expressions are
compiled then) and is immutable afterwards, so one compiled policy can serve every
thread. Each matcher can also say *why* it did not match, for ``aifr policy explain``.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aifr.capabilities import OperationType, RiskLevel
from aifr.policy.decision import Decision

__all__ = [
    "MISSING",
    "GlobSet",
    "InputCondition",
    "Match",
    "RequestView",
    "Rule",
    "SecretGrant",
    "SourceRef",
    "glob_problem",
    "is_path_under",
    "lookup_input",
    "normalize_path",
]

MISSING: Any = object()
"""Stands for an input that is absent, so that ``None`` stays an ordinary value."""


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where something was written: file, line and column (1-based), and the field path."""

    file: str
    line: int
    column: int
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class GlobSet:
    """A set of shell-style globs (``*``, ``?``, ``[...]``), matched case-sensitively.

    Literal patterns go into a frozenset; the rest are compiled into one alternation,
    so a match costs one hash lookup and at most one regular-expression call.
    """

    __slots__ = ("_literals", "_regex", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._literals = frozenset(p for p in self.patterns if not _has_wildcard(p))
        wild = [fnmatch.translate(p) for p in self.patterns if _has_wildcard(p)]
        self._regex = re.compile("|".join(f"(?:{w})" for w in wild)) if wild else None

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobSet) and self.patterns == other.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def matches(self, value: str) -> bool:
        """True when any pattern matches the whole of ``value``."""
        if value in self._literals:
            return True
        return self._regex is not None and self._regex.match(value) is not None

    def matches_any(self, values: Sequence[str]) -> bool:
        """True when any pattern matches any value."""
        return any(self.matches(v) for v in values)

    @property
    def has_wildcards(self) -> bool:
        """Whether some pattern is a glob rather than a literal."""
        return self._regex is not None

    @property
    def matcher(self) -> Callable[[str], bool]:
        """:meth:`matches` as the cheapest callable for these patterns (for compiled rules)."""
        regex = self._regex
        if regex is None:
            return self._literals.__contains__
        if not self._literals:
            match = regex.match
            return lambda value: match(value) is not None
        return self.matches

    @property
    def literals(self) -> frozenset[str]:
        """The patterns without wildcards."""
        return self._literals

    def describe(self) -> str:
        """The patterns as a short human-readable list."""
        if len(self.patterns) == 1:
            return repr(self.patterns[0])
        return "any of [" + ", ".join(repr(p) for p in self.patterns) + "]"


def _has_wildcard(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable glob, or ``None`` when it is.

    ``fnmatch`` accepts every string: an unclosed ``[`` silently becomes a literal and a
    reversed range (``[z-a]``) silently matches nothing. Both are mistakes in a policy,
    and an empty pattern matches only the empty string, so all three are refused at load.
    The class is read as ``fnmatch`` reads it (``!`` negates, a leading ``]`` is literal).
    """
    if not pattern:
        return "a glob cannot be empty"
    start, size = 0, len(pattern)
    while start < size:
        if pattern[start] != "[":
            start += 1
            continue
        end = start + 1
        if end < size and pattern[end] == "!":
            end += 1
        if end < size and pattern[end] == "]":
            end += 1
        while end < size and pattern[end] != "]":
            end += 1
        if end >= size:
            return f"unclosed '[' at position {start} (write '[[]' to match a literal '[')"
        body = pattern[start + 1 : end].removeprefix("!")
        at = 0
        while at < len(body):
            if at + 2 < len(body) and body[at + 1] == "-":
                low, high = body[at], body[at + 2]
                if low > high:
                    return (
                        f"range '{low}-{high}' in {pattern[start : end + 1]!r} is reversed "
                        "and matches nothing"
                    )
                at += 3
            else:
                at += 1
        start = end + 1
    return None


def lookup_input(inputs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value at a dotted path in nested mappings (and lists, by index), or ``MISSING``."""
    value: Any = inputs
    for key in keys:
        if isinstance(value, dict | Mapping):  # dict first: the fast C check
            value = value.get(key, MISSING)
        elif isinstance(value, list | tuple) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def is_path_under(value: str, root: str) -> bool:
    """Lexically, is ``value`` ``root`` or inside it once both are normalized?

    No filesystem access: ``..`` segments are resolved on the text, so
    ``/srv/data/../etc`` is not under ``/srv/data``. Absolute and relative paths never
    mix; a relative value that climbs out (``../x``) is under no relative root.
    """
    return _PathRoot(root).holds(value)


def normalize_path(path: str) -> str:
    """``posixpath.normpath``, skipped for a path it would leave as it is.

    Only ``//``, a ``.`` or ``..`` segment, or a trailing ``/`` make normpath change a
    non-empty path; a path with none of them (the usual input) is returned at once.
    normpath keeps exactly two leading slashes (POSIX leaves ``//x`` to the system), but
    every system aifr runs on reads ``//etc`` as ``/etc``, so they become one.
    """
    if not path or "//" in path or "/." in path or path[0] == "." or path[-1] == "/":
        norm = posixpath.normpath(path)
        return "/" + norm.lstrip("/") if norm.startswith("//") else norm
    return path


class _PathRoot:
    """A root for ``under``, normalized once."""

    __slots__ = ("absolute", "inside", "root")

    def __init__(self, root: str) -> None:
        self.root = normalize_path(root)
        self.absolute = self.root[0] == "/"
        self.inside = self.root.rstrip("/") + "/"  # what paths strictly inside start with

    def holds(self, value: str) -> bool:
        """Whether ``value``, normalized, is the root or inside it."""
        if "\x00" in value:
            return False
        norm_value = normalize_path(value)
        if (norm_value[0] == "/") is not self.absolute:
            return False
        if norm_value == ".." or norm_value.startswith("../"):
            return False
        root = self.root
        return root == "." or norm_value == root or norm_value.startswith(self.inside)


def _under_test(root: str, *, inside: bool) -> Test:
    holds = _PathRoot(root).holds
    if inside:
        return lambda v: isinstance(v, str) and holds(v)
    return lambda v: isinstance(v, str) and not holds(v)


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; policies compare JSON values, where they differ.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _ordered(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


Test = Callable[[Any], bool]


def _make_test(
    op: str, operand: Any
) -> Test:  # one branch per operator keeps the language in one place
    if op == "eq":
        return lambda v: _same(v, operand)
    if op == "ne":
        return lambda v: not _same(v, operand)
    if op == "in":
        return lambda v: any(_same(v, o) for o in operand)
    if op == "not_in":
        return lambda v: not any(_same(v, o) for o in operand)
    if op in ("lt", "le", "gt", "ge"):
        compare: Callable[[Any, Any], bool] = _COMPARE[op]
        return lambda v: _ordered(v, operand) and compare(v, operand)
    if op == "glob":
        regex = re.compile(fnmatch.translate(operand))
        return lambda v: isinstance(v, str) and regex.match(v) is not None
    if op == "regex":
        pattern: re.Pattern[str] = operand
        return lambda v: isinstance(v, str) and pattern.search(v) is not None
    if op == "under":
        return _under_test(operand, inside=True)
    if op == "not_under":
        return _under_test(operand, inside=False)
    raise ValueError(f"unknown input operator {op!r}")


def _every(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(test(value) for test in tests)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}

INPUT_OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "lt",
    "le",
    "gt",
    "ge",
    "glob",
    "regex",
    "under",
    "not_under",
    "exists",
)


class InputCondition:
    """All tests on one input path; an absent input fails every test but ``exists: false``.

    ``operators`` maps operator names (``INPUT_OPERATORS``) to operands; ``regex``
    operands must already be compiled.
    """

    __slots__ = ("_check", "_exists", "_key", "_tests", "keys", "operators", "path")

    def __init__(self, path: str, operators: Mapping[str, Any]) -> None:
        self.path = path
        self.keys = tuple(path.split("."))
        self._key = self.keys[0] if len(self.keys) == 1 else None
        self.operators = dict(operators)
        self._exists: bool | None = self.operators.get("exists")
        self._tests = tuple(
            (op, operand, _make_test(op, operand))
            for op, operand in self.operators.items()
            if op != "exists"
        )
        self._check = _every(tuple(test for _, _, test in self._tests))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, InputCondition)
            and self.path == other.path
            and self.describe_ops() == other.describe_ops()
        )

    def __hash__(self) -> int:
        return hash((self.path, self.describe_ops()))

    def matches(self, inputs: Mapping[str, Any], _workflow_id: str | None = None) -> bool:
        """True when the input at ``path`` passes every test (:meth:`why_not` without words).

        The unused second argument lets the bound method serve as a compiled context test.
        """
        key = self._key
        if key is not None and isinstance(inputs, dict):
            value = inputs.get(key, MISSING)
        else:
            value = lookup_input(inputs, self.keys)
        if value is MISSING:
            return self._exists is False
        if self._exists is False:
            return False
        return self._check(value)

    def why_not(self, inputs: Mapping[str, Any]) -> str | None:
        """``None`` when the condition holds, else the failing test in words."""
        value = lookup_input(inputs, self.keys)
        if value is MISSING:
            if self._exists is False:
                return None
            return f"input {self.path!r} is absent"
        if self._exists is False:
            return f"input {self.path!r} is present (exists: false)"
        for op, operand, test in self._tests:
            if not test(value):
                shown = operand.pattern if isinstance(operand, re.Pattern) else operand
                return f"input {self.path!r} = {value!r} fails {op} {shown!r}"
        return None

    def describe_ops(self) -> str:
        """A canonical text of the operators, used to compare conditions."""
        parts = []
        for op in sorted(self.operators):
            operand = self.operators[op]
            shown = operand.pattern if isinstance(operand, re.Pattern) else operand
            parts.append(f"{op}={shown!r}")
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class RequestView:
    """One principal's view of a request, as rules see it (delegation evaluates each link)."""

    principal: str
    roles: frozenset[str]
    capability_id: str
    operation: OperationType
    risk: RiskLevel
    tags: frozenset[str]
    inputs: Mapping[str, Any]
    workflow_id: str | None = None
    on_behalf_of: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """A compiled ``when``: every present field must hold (an empty ``when`` always matches).

    Fields fall in three groups, which the index evaluates at different times:
    capability (id globs, operation, risk, tags), subject (principal, roles,
    delegation) and context (workflow id, inputs).
    """

    capabilities: GlobSet | None = None
    operations: frozenset[OperationType] | None = None
    risks: frozenset[RiskLevel] | None = None
    tags: frozenset[str] | None = None
    principals: GlobSet | None = None
    roles: frozenset[str] | None = None
    on_behalf_of: GlobSet | None = None
    is_delegated: bool | None = None
    workflows: GlobSet | None = None
    inputs: tuple[InputCondition, ...] = ()

    def capability_matches(
        self, capability_id: str, operation: OperationType, risk: RiskLevel, tags: frozenset[str]
    ) -> bool:
        """The capability-dependent part holds."""
        return (
            (self.capabilities is None or self.capabilities.matches(capability_id))
            and (self.operations is None or operation in self.operations)
            and (self.risks is None or risk in self.risks)
            and (self.tags is None or self.tags <= tags)
        )

    def subject_matches(
        self, principal: str, roles: frozenset[str], on_behalf_of: tuple[str, ...]
    ) -> bool:
        """The principal-dependent part holds."""
        return (
            (self.principals is None or self.principals.matches(principal))
            and (self.roles is None or not self.roles.isdisjoint(roles))
            and (self.is_delegated is None or self.is_delegated == bool(on_behalf_of))
            and (self.on_behalf_of is None or self.on_behalf_of.matches_any(on_behalf_of))
        )

    @property
    def has_context(self) -> bool:
        """Whether the match depends on the workflow id or the inputs."""
        return self.workflows is not None or bool(self.inputs)

    def context_matches(self, inputs: Mapping[str, Any], workflow_id: str | None) -> bool:
        """The workflow and input conditions hold."""
        if self.workflows is not None and (
            workflow_id is None or not self.workflows.matches(workflow_id)
        ):
            return False
        return all(condition.matches(inputs) for condition in self.inputs)

    def matches(self, view: RequestView) -> bool:
        """The whole ``when`` holds for ``view`` (the naive reference path)."""
        return self.why_not(view) is None

    def why_not(self, view: RequestView) -> str | None:  # one check per field, in order
        """``None`` when the ``when`` holds, else the first failing field in words."""
        if self.capabilities is not None and not self.capabilities.matches(view.capability_id):
            return (
                f"capability {view.capability_id!r} does not match {self.capabilities.describe()}"
            )
        if self.operations is not None and view.operation not in self.operations:
            wanted = ", ".join(sorted(self.operations))
            return f"operation {view.operation.value} is not {wanted}"
        if self.risks is not None and view.risk not in self.risks:
            wanted = ", ".join(r.value for r in sorted(self.risks, key=lambda r: r.rank))
            return f"risk {view.risk.value} is not one of {wanted}"
        if self.tags is not None and not self.tags <= view.tags:
            return f"capability lacks tags {sorted(self.tags - view.tags)}"
        if self.principals is not None and not self.principals.matches(view.principal):
            return f"principal {view.principal!r} does not match {self.principals.describe()}"
        if self.roles is not None and self.roles.isdisjoint(view.roles):
            held = sorted(view.roles) or "no roles"
            return f"principal holds {held}, none of {sorted(self.roles)}"
        if self.is_delegated is not None and self.is_delegated != bool(view.on_behalf_of):
            return "request is delegated" if view.on_behalf_of else "request is not delegated"
        if self.on_behalf_of is not None and not self.on_behalf_of.matches_any(view.on_behalf_of):
            return f"no delegation link {list(view.on_behalf_of)} matches {self.on_behalf_of.describe()}"
        if self.workflows is not None and (
            view.workflow_id is None or not self.workflows.matches(view.workflow_id)
        ):
            return f"workflow {view.workflow_id!r} does not match {self.workflows.describe()}"
        for condition in self.inputs:
            failure = condition.why_not(view.inputs)
            if failure is not None:
                return failure
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ordered rule: when it matches, it decides (first match wins)."""

    id: str
    index: int
    when: Match
    decision: Decision
    reason: str
    approvers: tuple[str, ...] = ()
    quorum: int | None = None
    approval_ttl_s: float | None = None
    source: SourceRef | None = field(default=None, compare=False)
    quorum_roles: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SecretGrant:
    """A compiled ``secrets`` entry: requests matching ``when`` may carry these secrets."""

    names: GlobSet
    when: Match
    source: SourceRef | None = None

    def covers(self, secret_name: str, view: RequestView) -> bool:
        """Whether this grant lets ``view`` carry ``secret://secret_name``."""
        return self.names.matches(secret_name) and self.when.matches(view)
