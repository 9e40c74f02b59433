"""``findings.list``, ``findings.show`` and ``findings.triage``: findings through the governed path.

Agents (MCP) and users (``aifr findings triage``) read and triage findings by invoking
these, so every read is policy-checked and every triage is audited with the principal
who made it. ``findings.triage`` is compensable by itself: its output carries the
previous state under ``undo``, and a workflow that fails after it puts that state back.
The stores are opened on first call (``open_stores``), never at registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import CallInfo, Capability, Compensation, capability
from aifr.errors import ErrorCode, FindingsError
from aifr.findings.models import Finding, TriageState
from aifr.findings.ports import FindingFilter, ResourceRegistry, StoragePort
from aifr.findings.severity import Severity

__all__ = ["FindingsStores", "build_findings_capabilities", "finding_json"]

FindingsStores = tuple[StoragePort, ResourceRegistry]
SeverityName = Literal["critical", "high", "medium", "low", "info", "unknown"]
TriageName = Literal["open", "accepted", "false_positive", "fixed"]
PageSize = Annotated[int, Field(ge=1, le=1000)]


class FindingsPage(TypedDict):
    """What ``findings.list`` returns: one page and the cursor of the next (``None`` at the end)."""

    findings: list[dict[str, JsonValue]]
    next_cursor: str | None


class TriageOutcome(TypedDict):
    """What ``findings.triage`` returns, with the inputs that undo it."""

    finding_id: str
    from_state: str
    to_state: str
    actor: str
    at: str
    undo: dict[str, JsonValue]


def finding_json(finding: Finding) -> dict[str, JsonValue]:
    """A finding as a JSON object (what every ``--json``, MCP read and export starts from)."""
    dumped: dict[str, JsonValue] = finding.model_dump(mode="json")
    return dumped


def build_findings_capabilities(open_stores: Callable[[], FindingsStores]) -> list[Capability]:
    """The findings read and triage capabilities over the stores ``open_stores`` returns."""

    @capability(
        "findings.list",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "findings"),
        justification="reads the project's stored findings",
    )
    def list_findings(
        project: str,
        run: str | None = None,
        severity: list[SeverityName] | None = None,
        scanner: str | None = None,
        triage_state: TriageName | None = None,
        resource_id: str | None = None,
        limit: PageSize = 100,
        cursor: str | None = None,
    ) -> FindingsPage:
        """List a project's findings, oldest first, filtered, one page at a time.

        Args:
            project: The project id.
            run: Only findings reported by this run.
            severity: Only these severities.
            scanner: Only this scanner's findings (nuclei, feroxbuster, katana).
            triage_state: Only findings in this triage state.
            resource_id: Only findings linked to this registered resource.
            limit: Findings per page.
            cursor: The ``next_cursor`` of the previous page.
        """
        store, _ = open_stores()
        where = FindingFilter(
            project_id=project,
            run_id=run,
            severities=tuple(Severity(s) for s in severity or ()),
            scanner=scanner,
            triage_state=TriageState(triage_state) if triage_state else None,
            resource_id=resource_id,
        )
        page = store.list_findings(where, limit=limit, cursor=cursor)
        return FindingsPage(
            findings=[finding_json(f) for f in page.findings], next_cursor=page.next_cursor
        )

    @capability(
        "findings.show",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "findings"),
        justification="reads one stored finding and its triage history",
    )
    def show_finding(project: str, finding_id: str) -> dict[str, JsonValue]:
        """One finding of a project with its triage history.

        Args:
            project: The project id.
            finding_id: The finding id (as listed).
        """
        store, _ = open_stores()
        finding = store.get_finding(project, finding_id)
        if finding is None:
            raise FindingsError(
                f"finding {finding_id!r} is not in project {project!r}",
                code=ErrorCode.FINDINGS_NOT_FOUND,
                project_id=project,
                finding_id=finding_id,
            )
        history: list[JsonValue] = [
            {
                "at": change.at.isoformat(),
                "actor": change.actor,
                "from_state": change.from_state.value,
                "to_state": change.to_state.value,
                "reason": change.reason,
            }
            for change in store.list_triage_history(project, finding_id)
        ]
        return {**finding_json(finding), "triage_history": history}

    @capability(
        "findings.triage",
        operation="WRITE",
        risk="MEDIUM",
        compensation=Compensation(
            supported=True, strategy="previous_state", capability_id="findings.triage"
        ),
        side_effect_scope="database",
        side_effect_description="sets a finding's triage state and appends to its history",
        tags=("stdlib", "findings"),
        justification="a triage decision is recorded with its author and can be set back",
    )
    def triage_finding(
        project: str, finding_id: str, state: TriageName, call: CallInfo, reason: str = ""
    ) -> TriageOutcome:
        """Set a finding's triage state (open, accepted, false_positive, fixed).

        Args:
            project: The project id.
            finding_id: The finding id (as listed).
            state: The new triage state.
            reason: Why, kept in the finding's triage history.
            call: Filled by the runtime; its principal is recorded as the author.
        """
        store, _ = open_stores()
        change = store.triage_finding(
            project, finding_id, TriageState(state), actor=call.principal, reason=reason
        )
        return TriageOutcome(
            finding_id=change.finding_id,
            from_state=change.from_state.value,
            to_state=change.to_state.value,
            actor=change.actor,
            at=change.at.isoformat(),
            undo={
                "project": project,
                "finding_id": finding_id,
                "state": change.from_state.value,
                "reason": f"undo of the change to {change.to_state.value}",
            },
        )

    return [list_findings, show_finding, triage_finding]
