"""Load ``policies/*.yaml`` into a compiled :class:`Policy`, or fail naming file, line, field.

Files load in name order; their rules concatenate in that order (first match wins
across files). Every error, from the YAML parser, the schema
(:mod:`aifr.policy.document`) or the compiler (bad regex, cyclic role inheritance,
duplicate ids), points at ``file:line:column`` and a field path
(:mod:`aifr.policy.positions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from aifr.capabilities import OperationType, RiskLevel
from aifr.errors import PolicyError
from aifr.policy.approvers import ApprovalRule, ApprovalTable, Rbac, RoleDef
from aifr.policy.decision import Decision
from aifr.policy.document import ConditionDoc, PolicyFile, RuleDoc, SecretGrantDoc, WhenDoc
from aifr.policy.positions import (
    LocatedYaml,
    field_path,
    policy_error,
    schema_problems,
    single_error,
)
from aifr.policy.ratelimit import RateLimit
from aifr.policy.redos import backtracking_hazard
from aifr.policy.rules import (
    GlobSet,
    InputCondition,
    Match,
    Rule,
    SecretGrant,
    SourceRef,
    glob_problem,
)

__all__ = [
    "BUILTIN_DEFAULTS",
    "Policy",
    "RoleReference",
    "compile_conditions",
    "directory_digest",
    "directory_signature",
    "load_policy",
    "load_policy_text",
    "policy_files",
]

BUILTIN_DEFAULTS: Mapping[RiskLevel, Decision] = {
    RiskLevel.LOW: Decision.ALLOW,
    RiskLevel.MEDIUM: Decision.ALLOW,
    RiskLevel.HIGH: Decision.DENY,
    RiskLevel.CRITICAL: Decision.DENY,
}


@dataclass(frozen=True, slots=True)
class RoleReference:
    """A role named somewhere in the policy (for lint: unknown roles)."""

    role: str
    source: SourceRef


@dataclass(frozen=True)
class Policy:
    """A compiled policy: ordered rules, RBAC, approvals, defaults and rate limits."""

    rules: tuple[Rule, ...] = ()
    rbac: Rbac = field(default_factory=Rbac.empty)
    approvals: ApprovalTable = field(default_factory=lambda: ApprovalTable(()))
    defaults: Mapping[RiskLevel, Decision] = field(default_factory=lambda: dict(BUILTIN_DEFAULTS))
    rate_limits: tuple[RateLimit, ...] = ()
    secret_grants: tuple[SecretGrant, ...] = ()
    files: tuple[str, ...] = ()
    role_references: tuple[RoleReference, ...] = ()
    capability_references: tuple[tuple[str, SourceRef], ...] = ()
    digest: str = ""
    """SHA-256 of the files' names and bytes as loaded (:func:`load_policy` sets it)."""


# -- files ---------------------------------------------------------------------------


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory, in load (name) order."""
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file()),
        key=lambda p: p.name,
    )


def directory_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the policy files: changes when any does."""
    out = []
    for path in policy_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def _digest(files: Sequence[tuple[Path, bytes]]) -> str:
    sha = hashlib.sha256()
    for path, content in files:
        sha.update(path.name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return sha.hexdigest()


def directory_digest(directory: Path) -> str:
    """SHA-256 over the policy files' names and bytes, in load order, as they are now."""
    files: list[tuple[Path, bytes]] = []
    for path in policy_files(directory):
        try:
            files.append((path, path.read_bytes()))
        except OSError:
            continue
    return _digest(files)


def load_policy(directory: Path | str) -> Policy:
    """Load and compile every policy file in ``directory`` (none: built-in defaults only).

    Raises:
        PolicyError: a file cannot be read or parsed, breaks the schema, or does not
            compile; the message names file, line and field of each problem.
    """
    root = Path(directory)
    read: list[tuple[Path, bytes]] = []
    sources: list[tuple[str, str]] = []
    for path in policy_files(root):
        try:
            content = path.read_bytes()
            sources.append((str(path), content.decode("utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise single_error(SourceRef(str(path), 1, 1, ""), f"cannot read: {exc}") from exc
        read.append((path, content))
    # The digest of the very bytes compiled: a file rewritten after this read must not
    # be recorded as the policy put in force.
    return dataclasses.replace(load_policy_text(sources), digest=_digest(read))


def load_policy_text(sources: Sequence[tuple[str, str]]) -> Policy:
    """Compile policy files given as ``(name, text)`` pairs, in the order given.

    Raises:
        PolicyError: as :func:`load_policy`.
    """
    documents: list[tuple[LocatedYaml, PolicyFile]] = []
    problems: list[tuple[SourceRef, str]] = []
    for name, text in sources:
        located = LocatedYaml(name, text)
        if located.data is None:
            continue  # an empty file contributes nothing
        try:
            documents.append((located, PolicyFile.model_validate(located.data)))
        except PydanticValidationError as exc:
            problems.extend(schema_problems(located, exc, PolicyFile))
    if problems:
        raise policy_error(problems)
    return _Compiler(documents).compile()


# -- compiling -------------------------------------------------------------------------


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def compile_conditions(
    raw: Mapping[str, Any], *, where: str = "constraints"
) -> tuple[InputCondition, ...]:
    """Compile input conditions written in the policy language (used for grants).

    Raises:
        PolicyError: an operator is unknown or an operand is invalid.
    """
    try:
        doc = WhenDoc.model_validate({"inputs": dict(raw)})
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise PolicyError(
            f"{where}.{field_path(first['loc'][1:])}: {first['msg']}", field=where
        ) from exc
    conditions, problems = _conditions(
        doc.inputs or {}, lambda p: SourceRef(where, 0, 0, f"{where}.{p}")
    )
    if problems:
        src, message = problems[0]
        raise PolicyError(f"{src.field}: {message}", field=src.field)
    return conditions


def _conditions(
    inputs: Mapping[str, Any], source_of: Any
) -> tuple[tuple[InputCondition, ...], list[tuple[SourceRef, str]]]:
    conditions: list[InputCondition] = []
    problems: list[tuple[SourceRef, str]] = []
    for path, spec in inputs.items():
        if not path or any(not part for part in path.split(".")):
            problems.append((source_of(path), f"input path {path!r} has an empty segment"))
            continue
        if isinstance(spec, ConditionDoc):
            operators = {
                ("in" if name == "in_" else name): getattr(spec, name)
                for name in spec.model_fields_set
            }
        elif isinstance(spec, list):
            operators = {"in": spec}
        else:
            operators = {"eq": spec}
        if not operators:
            problems.append((source_of(path), "a condition needs at least one operator"))
            continue
        operand_problems = _operand_problems(operators)
        if operand_problems:
            problems.extend(
                (source_of(f"{path}.{op}"), message) for op, message in operand_problems
            )
            continue
        if "regex" in operators:
            operators["regex"] = re.compile(operators["regex"])
        conditions.append(InputCondition(path, operators))
    return tuple(conditions), problems


def _operand_problems(operators: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(operator, message)`` for each operand that cannot be compiled."""
    problems: list[tuple[str, str]] = [
        (op, "NaN is not a value to compare with: no input equals it or is ordered against it")
        for op, operand in operators.items()
        if _holds_nan(operand)
    ]
    if "regex" in operators:
        try:
            re.compile(operators["regex"])
        except re.error as exc:
            problems.append(("regex", f"invalid regex: {exc}"))
        else:
            hazard = backtracking_hazard(operators["regex"])
            if hazard is not None:
                problems.append(("regex", f"unsafe regex {operators['regex']!r}: {hazard}"))
    if "glob" in operators:
        problem = glob_problem(operators["glob"])
        if problem is not None:
            problems.append(("glob", f"invalid glob {operators['glob']!r}: {problem}"))
    problems.extend(
        (op, "a root path cannot be empty")
        for op in ("under", "not_under")
        if op in operators and not operators[op]
    )
    return problems


def _holds_nan(operand: Any) -> bool:
    if isinstance(operand, float):
        return math.isnan(operand)
    if isinstance(operand, list | tuple):
        return any(_holds_nan(item) for item in operand)
    if isinstance(operand, dict):
        return any(_holds_nan(item) for item in operand.values())
    return False


def _risks(when: WhenDoc) -> frozenset[RiskLevel] | None:
    if when.risk is None and when.risk_at_least is None and when.risk_at_most is None:
        return None
    levels = set(RiskLevel)
    if when.risk is not None:
        levels &= {RiskLevel(r) for r in _as_list(when.risk) or ()}
    if when.risk_at_least is not None:
        floor = RiskLevel(when.risk_at_least)
        levels = {level for level in levels if level.at_least(floor)}
    if when.risk_at_most is not None:
        ceiling = RiskLevel(when.risk_at_most)
        levels = {level for level in levels if ceiling.at_least(level)}
    return frozenset(levels)


class _Compiler:
    """Merges validated files into one :class:`Policy`, collecting every problem."""

    def __init__(self, documents: Sequence[tuple[LocatedYaml, PolicyFile]]) -> None:
        self.documents = documents
        self.problems: list[tuple[SourceRef, str]] = []
        self.role_refs: list[RoleReference] = []
        self.capability_refs: list[tuple[str, SourceRef]] = []
        self.rules: list[Rule] = []
        self.limits: list[RateLimit] = []
        self.secret_grants: list[SecretGrant] = []
        self.approvals: dict[RiskLevel, ApprovalRule] = {}
        self.defaults: dict[RiskLevel, Decision] = dict(BUILTIN_DEFAULTS)
        self.default_from: SourceRef | None = None
        self.rule_ids: dict[str, SourceRef] = {}
        self.limit_names: dict[str, SourceRef] = {}
        self.roles: dict[str, tuple[RoleDef, SourceRef]] = {}
        self.groups: dict[str, GlobSet] = {}

    def problem(self, source: SourceRef, message: str) -> None:
        self.problems.append((source, message))

    def compile(self) -> Policy:
        for located, doc in self.documents:
            self._default(located, doc)
            self._groups_and_roles(located, doc)
            for index, rule_doc in enumerate(doc.rules):
                self._add_rule(located, index, rule_doc)
            self._approvals(located, doc)
            self._rate_limits(located, doc)
            for index, grant_doc in enumerate(doc.secrets):
                self._secret_grant(located, index, grant_doc)
        rbac = self._rbac(self.roles, self.groups)
        if self.problems:
            raise policy_error(self.problems)
        return Policy(
            rules=tuple(self.rules),
            rbac=rbac,
            approvals=ApprovalTable(self.approvals.values()),
            defaults=self.defaults,
            rate_limits=tuple(self.limits),
            secret_grants=tuple(self.secret_grants),
            files=tuple(located.file for located, _ in self.documents),
            role_references=tuple(self.role_refs),
            capability_references=tuple(self.capability_refs),
        )

    def _default(self, located: LocatedYaml, doc: PolicyFile) -> None:
        if doc.default is None:
            return
        here = located.source(("default",))
        if self.default_from is not None:
            self.problem(here, f"default is already set in {self.default_from}")
        self.default_from = here
        if isinstance(doc.default, str):
            self.defaults = dict.fromkeys(RiskLevel, Decision(doc.default))
        else:
            self.defaults.update({RiskLevel(k): Decision(v) for k, v in doc.default.items()})

    def _groups_and_roles(self, located: LocatedYaml, doc: PolicyFile) -> None:
        for name, members in doc.groups.items():
            self._check_globs(located, ("groups", name), members)
            if name in self.groups:
                self.problem(located.source(("groups", name)), f"group {name!r} is defined twice")
            self.groups[name] = GlobSet(members)
        for name, role_doc in doc.roles.items():
            here = located.source(("roles", name))
            self._check_globs(located, ("roles", name, "principals"), role_doc.principals)
            if name in self.roles:
                self.problem(here, f"role {name!r} is already defined at {self.roles[name][1]}")
            role = RoleDef(
                name=name,
                principals=GlobSet(role_doc.principals),
                groups=frozenset(role_doc.groups),
                inherits=tuple(role_doc.inherits),
            )
            self.roles[name] = (role, here)

    def _add_rule(self, located: LocatedYaml, index: int, rule_doc: RuleDoc) -> None:
        rule = self._rule(located, index, rule_doc, len(self.rules))
        here = rule.source or located.source(("rules", index))
        if rule.id in self.rule_ids:
            self.problem(here, f"rule id {rule.id!r} is already used at {self.rule_ids[rule.id]}")
        self.rule_ids[rule.id] = here
        self.rules.append(rule)

    def _approvals(self, located: LocatedYaml, doc: PolicyFile) -> None:
        for index, approval in enumerate(doc.approvals):
            level = RiskLevel(approval.risk)
            if level in self.approvals:
                self.problem(
                    located.source(("approvals", index)),
                    f"approvals for {level.value} are defined twice",
                )
            for role_index, role_name in enumerate(approval.roles):
                self._role_ref(role_name, located.source(("approvals", index, "roles", role_index)))
            for role_name in approval.quorum_roles or {}:
                self._role_ref(role_name, located.source(("approvals", index, "quorum_roles")))
            self.approvals[level] = ApprovalRule(
                level,
                tuple(approval.roles),
                approval.quorum,
                approval.ttl_s,
                tuple(sorted((approval.quorum_roles or {}).items())),
            )

    def _rate_limits(self, located: LocatedYaml, doc: PolicyFile) -> None:
        for index, limit_doc in enumerate(doc.rate_limits):
            here = located.source(("rate_limits", index))
            if limit_doc.name in self.limit_names:
                self.problem(here, f"rate limit {limit_doc.name!r} is defined twice")
            self.limit_names[limit_doc.name] = here
            self.limits.append(
                RateLimit(
                    name=limit_doc.name,
                    when=self._match(located, ("rate_limits", index, "when"), limit_doc.when),
                    limit=limit_doc.limit,
                    per_s=limit_doc.per_s,
                    burst=limit_doc.burst or limit_doc.limit,
                )
            )

    def _secret_grant(self, located: LocatedYaml, index: int, doc: SecretGrantDoc) -> None:
        base = ("secrets", index)
        self._check_globs(located, (*base, "names"), doc.names)
        self.secret_grants.append(
            SecretGrant(
                names=GlobSet(_as_list(doc.names) or ()),
                when=self._match(located, (*base, "when"), doc.when),
                source=located.source(base),
            )
        )

    def _check_globs(
        self, located: LocatedYaml, path: tuple[str | int, ...], value: str | Sequence[str] | None
    ) -> None:
        """Report every pattern of a glob field that :func:`glob_problem` refuses."""
        if value is None:
            return
        items = (
            [(path, value)]
            if isinstance(value, str)
            else [((*path, k), pattern) for k, pattern in enumerate(value)]
        )
        for where, pattern in items:
            problem = glob_problem(pattern)
            if problem is not None:
                self.problem(located.source(where), f"invalid glob {pattern!r}: {problem}")

    def _role_ref(self, role: str, source: SourceRef) -> None:
        self.role_refs.append(RoleReference(role, source))

    def _rule(self, located: LocatedYaml, index: int, doc: RuleDoc, position: int) -> Rule:
        base = ("rules", index)
        for role_index, role in enumerate(doc.approvers or ()):
            self._role_ref(role, located.source((*base, "approvers", role_index)))
        for role in doc.quorum_roles or {}:
            self._role_ref(role, located.source((*base, "quorum_roles")))
        if doc.decision != "REQUIRE_APPROVAL" and (
            doc.approvers is not None
            or doc.quorum is not None
            or doc.quorum_roles is not None
            or doc.approval_ttl_s is not None
        ):
            self.problem(
                located.source(base),
                "approvers, quorum, quorum_roles and approval_ttl_s only apply to "
                "REQUIRE_APPROVAL rules",
            )
        return Rule(
            id=doc.id,
            index=position,
            when=self._match(located, (*base, "when"), doc.when),
            decision=Decision(doc.decision),
            reason=doc.reason or doc.description or f"rule {doc.id}",
            approvers=tuple(doc.approvers or ()),
            quorum=doc.quorum,
            approval_ttl_s=doc.approval_ttl_s,
            source=located.source(base),
            quorum_roles=tuple(sorted((doc.quorum_roles or {}).items())),
        )

    def _match(self, located: LocatedYaml, base: tuple[str | int, ...], when: WhenDoc) -> Match:
        for name in ("principal", "capability", "workflow", "on_behalf_of"):
            self._check_globs(located, (*base, name), getattr(when, name))
        for role_index, role in enumerate(_as_list(when.roles) or ()):
            self._role_ref(role, located.source((*base, "roles", role_index)))
        capabilities = _as_list(when.capability)
        for pattern in capabilities or ():
            self.capability_refs.append((pattern, located.source((*base, "capability"))))
        risks = _risks(when)
        if risks is not None and not risks:
            self.problem(located.source((*base, "risk")), "no risk level satisfies these bounds")
        conditions, problems = _conditions(
            when.inputs or {}, lambda p: located.source((*base, "inputs", *p.split(".")))
        )
        self.problems.extend(problems)
        roles = _as_list(when.roles)
        tags = _as_list(when.tags)
        return Match(
            capabilities=GlobSet(capabilities) if capabilities is not None else None,
            operations=(
                frozenset(OperationType(o) for o in _as_list(when.operation) or ())
                if when.operation is not None
                else None
            ),
            risks=risks,
            tags=frozenset(tags) if tags is not None else None,
            principals=_globs(when.principal),
            roles=frozenset(roles) if roles is not None else None,
            on_behalf_of=_globs(when.on_behalf_of),
            is_delegated=when.delegated,
            workflows=_globs(when.workflow),
            inputs=conditions,
        )

    def _rbac(
        self, roles: Mapping[str, tuple[RoleDef, SourceRef]], groups: Mapping[str, GlobSet]
    ) -> Rbac:
        for role, source in roles.values():
            for group in role.groups:
                if group not in groups:
                    self.problem(source, f"role {role.name!r} names unknown group {group!r}")
            for parent in role.inherits:
                if parent not in roles:
                    self.problem(source, f"role {role.name!r} inherits unknown role {parent!r}")
        closure: dict[str, frozenset[str]] = {}
        for name, (_, source) in roles.items():
            cycle = _find_cycle(name, {n: r.inherits for n, (r, _) in roles.items()})
            if cycle:
                self.problem(source, "cyclic role inheritance: " + " -> ".join(cycle))
                continue
            closure[name] = _closure(name, {n: r.inherits for n, (r, _) in roles.items()})
        return Rbac({n: r for n, (r, _) in roles.items()}, groups, closure)


def _globs(value: str | list[str] | None) -> GlobSet | None:
    patterns = _as_list(value)
    return GlobSet(patterns) if patterns is not None else None


def _find_cycle(start: str, inherits: Mapping[str, Sequence[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    while stack:
        name, trail = stack.pop()
        for parent in inherits.get(name, ()):
            if parent == start:
                return [*trail, parent]
            if parent not in trail:
                stack.append((parent, [*trail, parent]))
    return None


def _closure(start: str, inherits: Mapping[str, Sequence[str]]) -> frozenset[str]:
    seen = {start}
    todo = [start]
    while todo:
        for parent in inherits.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return frozenset(seen)
