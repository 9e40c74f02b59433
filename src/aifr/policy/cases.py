"""Policy test tables (``aifr policy test FILE``), in the spirit of ``opa test``.

A table lists capabilities (or takes them from the project's registry), optional grants,
and ordered cases: a request with its expected decision, or an approver check with its
expected error. Cases run in order against one engine whose clocks stand still unless a
case advances them (``advance_s``), so rate limits and grant expiry are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.capabilities.secret_syntax import secret_names
from aifr.errors import AifrError, CapabilityError, PolicyError
from aifr.policy.approvers import missing_votes
from aifr.policy.decision import Decision, PolicyDecision, PolicyRequest
from aifr.policy.document import DecisionName, OperationName, RiskName
from aifr.policy.engine import PolicyEngine
from aifr.policy.grants import Grant, InMemoryGrantStore
from aifr.policy.loader import compile_conditions
from aifr.policy.positions import LocatedYaml, policy_error, schema_problems, single_error
from aifr.policy.rules import SourceRef, glob_problem

__all__ = [
    "TABLE_EPOCH",
    "CaseResult",
    "CaseTable",
    "ManualClock",
    "failed",
    "load_case_table",
    "run_case_table",
]

_STRICT = ConfigDict(frozen=True, extra="forbid")
TABLE_EPOCH = 1_767_225_600.0
"""Wall-clock time at which a table starts (2026-01-01T00:00:00Z), for grant expiry."""


class CapabilityCaseDoc(BaseModel):
    """A capability described in the table (no handler needed)."""

    model_config = _STRICT

    id: str
    operation: OperationName
    risk: RiskName | None = None
    tags: list[str] = []
    requires_approval: bool = False
    version: str = "1"


class GrantCaseDoc(BaseModel):
    """A grant in force when the table starts."""

    model_config = _STRICT

    id: str | None = None
    principal: str
    capability: str
    constraints: dict[str, Any] = {}
    ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    issued_by: str = "table-approver"


class ExpectDoc(BaseModel):
    """An expected decision; fields left out are not compared."""

    model_config = _STRICT

    decision: DecisionName
    rule: str | None = None
    reason_contains: str | None = None
    approver_roles: list[str] | None = None
    quorum: int | None = None
    quorum_roles: dict[str, int] | None = None
    approval_ttl_s: float | None = None
    grant: bool | None = None


class ApproveDoc(BaseModel):
    """An approver check: may ``approver`` approve ``requester``'s request at ``risk``?"""

    model_config = _STRICT

    approver: str
    requester: str
    risk: RiskName
    approver_roles: list[str] = []


Expectation = DecisionName | ExpectDoc


class CaseDoc(BaseModel):
    """One case: a request and its expectation, or an approver check."""

    model_config = _STRICT

    name: str
    principal: str | None = None
    roles: list[str] = []
    capability: str | None = None
    inputs: dict[str, Any] = {}
    workflow: str | None = None
    on_behalf_of: list[str] = []
    advance_s: Annotated[float, Field(ge=0)] = 0.0
    votes: list[str] = []
    """Approvers who vote yes in turn on the request (it must need an approval)."""
    expect_votes: list[str] = []
    """After each vote: ``pending``, ``approved``, or the error code the vote gets."""
    expect: Expectation | list[Expectation] | None = None
    approve: ApproveDoc | None = None
    expect_error: str | None = None


class CaseFileDoc(BaseModel):
    """A policy test table file."""

    model_config = _STRICT

    version: Literal[1] = 1
    policy: str | None = None
    capabilities: list[CapabilityCaseDoc] = []
    grants: list[GrantCaseDoc] = []
    cases: Annotated[list[CaseDoc], Field(min_length=1)]


@dataclass(frozen=True)
class CaseTable:
    """A loaded table: where it is, its capabilities, grants and cases with their lines."""

    path: Path
    policy_dir: Path | None
    capabilities: dict[str, CapabilitySpec]
    grants: tuple[GrantCaseDoc, ...]
    cases: tuple[tuple[CaseDoc, SourceRef], ...]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: what was expected, what happened, and the differences."""

    name: str
    source: SourceRef
    expected: str
    actual: str
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when nothing differed."""
        return not self.problems


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward ``seconds``."""
        self.now += seconds


def _grant_problems(
    located: LocatedYaml, index: int, grant: GrantCaseDoc
) -> list[tuple[SourceRef, str]]:
    """A table grant's glob and constraints, checked as ``issue_grant`` checks them.

    The engine ignores a stored grant it cannot compile, so an unchecked typo here
    would only show as a case failing for no visible reason.
    """
    problems: list[tuple[SourceRef, str]] = []
    problem = glob_problem(grant.capability)
    if problem is not None:
        problems.append(
            (
                located.source(("grants", index, "capability")),
                f"invalid glob {grant.capability!r}: {problem}",
            )
        )
    try:
        compile_conditions(grant.constraints)
    except PolicyError as exc:
        problems.append((located.source(("grants", index, "constraints")), exc.message))
    return problems


def load_case_table(path: Path | str) -> CaseTable:
    """Read and validate a table file.

    Raises:
        PolicyError: the file is unreadable, not YAML, breaks the table schema, or
            describes an inconsistent capability; each problem names file, line, field.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise single_error(SourceRef(str(file), 1, 1, ""), f"cannot read: {exc}") from exc
    located = LocatedYaml(str(file), text)
    try:
        doc = CaseFileDoc.model_validate(located.data)
    except PydanticValidationError as exc:
        raise policy_error(list(schema_problems(located, exc, CaseFileDoc))) from exc
    problems: list[tuple[SourceRef, str]] = []
    capabilities: dict[str, CapabilitySpec] = {}
    for index, item in enumerate(doc.capabilities):
        try:
            capabilities[item.id] = CapabilitySpec(
                id=item.id,
                version=item.version,
                operation_type=OperationType(item.operation),
                risk=(
                    Risk(level=RiskLevel(item.risk), requires_approval=item.requires_approval)
                    if item.risk
                    else None
                ),
                tags=tuple(item.tags),
            )
        except (CapabilityError, PydanticValidationError) as exc:
            message = exc.message if isinstance(exc, AifrError) else str(exc).splitlines()[0]
            problems.append((located.source(("capabilities", index)), message))
    for index, grant in enumerate(doc.grants):
        problems.extend(_grant_problems(located, index, grant))
    cases = []
    for index, case in enumerate(doc.cases):
        source = located.source(("cases", index))
        if case.approve is None and (case.principal is None or case.capability is None):
            problems.append((source, "a case needs principal and capability, or approve"))
        if case.approve is None and case.expect is None:
            problems.append((source, "a request case needs expect"))
        if case.approve is not None and case.expect is not None:
            problems.append((source, "an approve case takes expect_error, not expect"))
        if len(case.votes) != len(case.expect_votes):
            problems.append((source, "votes and expect_votes need one entry each per vote"))
        cases.append((case, source))
    if problems:
        raise policy_error(problems)
    policy_dir = (file.parent / doc.policy).resolve() if doc.policy else None
    return CaseTable(file, policy_dir, capabilities, tuple(doc.grants), tuple(cases))


def _describe(decision: PolicyDecision) -> str:
    text = f"{decision.decision.value} rule={decision.rule_id or '-'}"
    if decision.approver_roles:
        text += f" approvers={','.join(decision.approver_roles)} quorum={decision.quorum}"
    if decision.quorum_roles:
        roles = ",".join(f"{role}:{count}" for role, count in decision.quorum_roles)
        text += f" quorum_roles={roles}"
    if decision.approval_ttl_s is not None:
        text += f" approval_ttl_s={decision.approval_ttl_s:g}"
    if decision.grant_id:
        text += f" grant={decision.grant_id}"
    return text + f" reason={decision.reason!r}"


def _expected_text(expect: ExpectDoc) -> str:
    extra = sorted(expect.model_fields_set - {"decision"})
    return " ".join([str(expect.decision), *(f"{n}={getattr(expect, n)!r}" for n in extra)])


def _compare(expect: ExpectDoc, decision: PolicyDecision) -> list[str]:
    problems = []
    if decision.decision.value != expect.decision:
        problems.append(f"decision: expected {expect.decision}, got {decision.decision.value}")
    fields = expect.model_fields_set
    if "rule" in fields and decision.rule_id != expect.rule:
        problems.append(f"rule: expected {expect.rule!r}, got {decision.rule_id!r}")
    if expect.reason_contains is not None and expect.reason_contains not in decision.reason:
        problems.append(
            f"reason: expected to contain {expect.reason_contains!r}, got {decision.reason!r}"
        )
    if expect.approver_roles is not None and sorted(expect.approver_roles) != sorted(
        decision.approver_roles
    ):
        problems.append(
            f"approver_roles: expected {sorted(expect.approver_roles)}, "
            f"got {sorted(decision.approver_roles)}"
        )
    if expect.quorum is not None and expect.quorum != decision.quorum:
        problems.append(f"quorum: expected {expect.quorum}, got {decision.quorum}")
    if expect.quorum_roles is not None and expect.quorum_roles != dict(decision.quorum_roles):
        problems.append(
            f"quorum_roles: expected {expect.quorum_roles}, got {dict(decision.quorum_roles)}"
        )
    if "approval_ttl_s" in fields and expect.approval_ttl_s != decision.approval_ttl_s:
        problems.append(
            f"approval_ttl_s: expected {expect.approval_ttl_s!r}, got {decision.approval_ttl_s!r}"
        )
    if expect.grant is not None and expect.grant != (decision.grant_id is not None):
        problems.append(f"grant: expected {expect.grant}, got {decision.grant_id!r}")
    return problems


def _expectations(case: CaseDoc) -> list[ExpectDoc]:
    raw = case.expect if isinstance(case.expect, list) else [case.expect]
    return [e if isinstance(e, ExpectDoc) else ExpectDoc(decision=e) for e in raw if e is not None]


def _run_approve(engine: PolicyEngine, case: CaseDoc, source: SourceRef) -> CaseResult:
    approve = case.approve
    assert approve is not None  # noqa: S101  # checked by the caller
    expected = case.expect_error or "approved"
    try:
        engine.check_approver(
            approver=approve.approver,
            requester=approve.requester,
            risk=RiskLevel(approve.risk),
            decision=PolicyDecision(
                decision=Decision.REQUIRE_APPROVAL,
                rule_id=None,
                reason="table case",
                approver_roles=tuple(approve.approver_roles),
            ),
        )
        actual = "approved"
    except AifrError as exc:
        actual = exc.code.value
    problems = () if actual == expected else (f"approval: expected {expected}, got {actual}",)
    return CaseResult(case.name, source, expected, actual, problems)


def run_case_table(
    table: CaseTable,
    *,
    policy_dir: Path | str | None = None,
    lookup: Callable[[str], CapabilitySpec | None] | None = None,
) -> list[CaseResult]:
    """Run every case in order; a case whose request cannot be built fails, others go on.

    ``policy_dir`` is used when the table names no ``policy``; ``lookup`` finds
    capabilities the table does not describe (the project's registry).

    Raises:
        PolicyError: no policy directory, or the policy does not load.
    """
    directory = table.policy_dir or (Path(policy_dir) if policy_dir is not None else None)
    if directory is None:
        raise PolicyError(f"{table.path}: no policy directory: set 'policy' in the table")
    clock, wall = ManualClock(), ManualClock(TABLE_EPOCH)
    store = InMemoryGrantStore(
        [
            Grant(
                id=g.id or f"g-table-{index}",
                principal=g.principal,
                capability=g.capability,
                issued_by=g.issued_by,
                issued_at=TABLE_EPOCH,
                expires_at=TABLE_EPOCH + g.ttl_s,
                constraints=g.constraints,
            )
            for index, g in enumerate(table.grants)
        ]
    )
    engine = PolicyEngine.from_directory(directory, grants=store, clock=clock, wall_clock=wall)
    results = []
    for case, source in table.cases:
        clock.advance(case.advance_s)
        wall.advance(case.advance_s)
        if case.approve is not None:
            results.append(_run_approve(engine, case, source))
        else:
            results.append(_run_request(engine, table, case, source, lookup))
    return results


def _run_request(
    engine: PolicyEngine,
    table: CaseTable,
    case: CaseDoc,
    source: SourceRef,
    lookup: Callable[[str], CapabilitySpec | None] | None,
) -> CaseResult:
    assert case.capability is not None and case.principal is not None  # noqa: S101  # validated at load
    expectations = _expectations(case)
    expected = "; ".join(_expected_text(e) for e in expectations)
    spec = table.capabilities.get(case.capability) or (lookup(case.capability) if lookup else None)
    if spec is None:
        problem = f"capability {case.capability!r} is neither in the table nor registered"
        return CaseResult(case.name, source, expected, "-", (problem,))
    request = PolicyRequest(
        principal=case.principal,
        capability=spec,
        inputs=case.inputs,
        roles=frozenset(case.roles),
        workflow_id=case.workflow,
        on_behalf_of=tuple(case.on_behalf_of),
        secrets=secret_names(case.inputs),
    )
    actual: list[str] = []
    problems: list[str] = []
    for attempt, expect in enumerate(expectations, start=1):
        decision = engine.decide(request)
        actual.append(_describe(decision))
        prefix = f"call {attempt}: " if len(expectations) > 1 else ""
        problems.extend(prefix + p for p in _compare(expect, decision))
    if case.votes:
        expected += f"; votes {case.expect_votes}"
        states = _vote_in_turn(engine, request, decision, case.votes)
        actual.append(f"votes {states}")
        if states != case.expect_votes:
            problems.append(f"votes: expected {case.expect_votes}, got {states}")
    return CaseResult(case.name, source, expected, "; ".join(actual), tuple(problems))


def _vote_in_turn(
    engine: PolicyEngine, request: PolicyRequest, decision: PolicyDecision, voters: list[str]
) -> list[str]:
    """The request's state after each vote: ``pending``, ``approved`` or the refusal's code."""
    if decision.decision is not Decision.REQUIRE_APPROVAL:
        return [f"not an approval ({decision.decision.value})"] * len(voters)
    counted: list[frozenset[str]] = []
    seen: set[str] = set()
    states = []
    for voter in voters:
        try:
            engine.check_approver(
                approver=voter,
                requester=request.principal,
                risk=request.capability.effective_risk,
                decision=decision,
            )
        except AifrError as exc:
            states.append(exc.code.value)
            continue
        if voter in seen:
            states.append("approval.already_decided")
            continue
        seen.add(voter)
        counted.append(engine.roles_of(voter))
        missing = missing_votes(counted, decision.quorum_roles, decision.quorum)
        states.append("pending" if missing else "approved")
    return states


def failed(results: Sequence[CaseResult]) -> list[CaseResult]:
    """The results that did not pass."""
    return [r for r in results if not r.passed]
