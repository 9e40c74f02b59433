"""``findings.import``, ``findings.list``, ``findings.show`` and ``findings.triage``: the governed path.

Agents (MCP) and users (``aifr findings import|triage``) import, read and triage findings
by invoking these, so every call is policy-checked and every import and triage is
audited with the principal who made it (an import's record carries its counts).
``findings.import`` reads only a regular file inside the configured ``[fs] roots``
(walked without following symlinks, as ``io.fs.read``), so an agent cannot load
``/etc`` or aifr's own state into a project where ``findings.list`` would show it. ``findings.triage`` is compensable by itself: its output carries the
previous state under ``undo``, and a workflow that fails after it puts that state back.
The stores are opened on first call (``open_stores``), never at registration.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import CallInfo, Capability, Compensation, capability
from aifr.errors import ErrorCode, FindingsError
from aifr.findings.importer import IMPORT_PROGRESS, import_findings
from aifr.findings.models import Finding, TriageState
from aifr.findings.ports import FindingFilter, ResourceRegistry, StoragePort
from aifr.findings.severity import Severity
from aifr.invocation.context import FINDINGS_AUDIT_KEY, current_request
from aifr.stdlib.confine import Confinement, open_file_for_reading

__all__ = [
    "FindingsStores",
    "build_findings_capabilities",
    "finding_json",
    "new_upload",
    "report_to_audit",
    "upload_path",
]

FindingsStores = tuple[StoragePort, ResourceRegistry]
SeverityName = Literal["critical", "high", "medium", "low", "info", "unknown"]
TriageName = Literal["open", "accepted", "false_positive", "fixed"]
PageSize = Annotated[int, Field(ge=1, le=1000)]
ScannerChoice = Literal["auto", "nuclei", "feroxbuster", "katana"]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
# A file of millions of results takes minutes on a slow disk; the default 30 s would
# report a finished import as timed out.
IMPORT_TIMEOUT_S: Final = 6 * 3600.0
_READ_BUFFER: Final = 1024 * 1024
UPLOAD_ID: Final = re.compile(r"[0-9a-f]{32}")


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


def report_to_audit(details: dict[str, JsonValue]) -> None:
    """Put ``details`` into the audit record of the call running now (under ``findings``)."""
    context = current_request()
    if context is not None:
        context.set(FINDINGS_AUDIT_KEY, details)


def upload_path(uploads_dir: Path, upload: str) -> Path:
    """Where the upload ``upload`` (an id ``new_upload`` made) lies under ``uploads_dir``."""
    if not UPLOAD_ID.fullmatch(upload):
        raise FindingsError(
            f"upload {upload!r} is not an upload id (32 hexadecimal digits)",
            code=ErrorCode.FINDINGS_INVALID,
        )
    return uploads_dir / upload


def new_upload(uploads_dir: Path, content: bytes) -> str:
    """Store ``content`` as a new upload (readable by its owner only); returns its id.

    A file sent over HTTP has no path inside the roots: the route keeps it here under a
    random id, and ``findings.import`` reads it by that id, so the import is the same
    governed, audited call whichever way the file came.
    """
    uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    upload = secrets.token_hex(16)
    fd = os.open(upload_path(uploads_dir, upload), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(content)
    return upload


def _open_import_source(
    confinement: Confinement, uploads_dir: Path | None, path: str | None, upload: str | None
) -> tuple[int, os.stat_result, str]:
    """The open file ``findings.import`` reads (a path inside the roots, or an upload)."""
    if (path is None) == (upload is None):
        raise FindingsError(
            "findings.import takes exactly one of path and upload",
            code=ErrorCode.FINDINGS_INVALID,
        )
    if path is not None:
        fd, info = open_file_for_reading(confinement, path)
        return fd, info, path
    assert upload is not None  # noqa: S101  # one of the two, checked above
    if uploads_dir is None:
        raise FindingsError("this runtime takes no uploads", code=ErrorCode.FINDINGS_INVALID)
    try:
        fd = os.open(upload_path(uploads_dir, upload), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FindingsError(
            f"no upload {upload!r}: send the file to the API's import route",
            code=ErrorCode.FINDINGS_NOT_FOUND,
        ) from None
    return fd, os.fstat(fd), f"upload:{upload}"


def build_findings_capabilities(
    open_stores: Callable[[], FindingsStores],
    *,
    confinement: Confinement | None = None,
    uploads_dir: Path | None = None,
) -> list[Capability]:
    """The findings capabilities over the stores ``open_stores`` returns.

    ``findings.import`` is among them when ``confinement`` (the ``[fs] roots``) is given;
    it also reads files sent to the API (``upload``) from ``uploads_dir``.
    """

    @capability(
        "findings.import",
        operation="WRITE",
        risk="MEDIUM",
        side_effect_scope="database",
        side_effect_description=(
            "adds a scanner output file's findings to a project as one run (new findings, "
            "or one more occurrence of known ones)"
        ),
        tags=("stdlib", "findings"),
        timeout_s=IMPORT_TIMEOUT_S,
        justification=(
            "reads one file inside the configured roots and writes only the project's "
            "findings store; nothing leaves the machine, and the project can be deleted"
        ),
    )
    def import_file(
        project: Ident,
        path: str | None = None,
        scanner: ScannerChoice = "auto",
        run: Ident | None = None,
        upload: str | None = None,
    ) -> dict[str, JsonValue]:
        """Import a scanner's output file into a findings project, streamed and deduplicated.

        Args:
            project: The findings project id (created by its first import).
            path: The file, relative to the first root or absolute inside a root.
            scanner: auto (read from the content), nuclei, feroxbuster or katana.
            run: The run id (default: a new one).
            upload: Instead of a path, the id of a file sent to the API's import route.
        """
        assert confinement is not None  # noqa: S101  # registered only with one
        fd, info, source = _open_import_source(confinement, uploads_dir, path, upload)
        raw = io.FileIO(fd, "r", closefd=True)
        watch = IMPORT_PROGRESS.get()
        size = info.st_size

        def progress(_: object) -> None:
            if watch is not None:
                watch(os.lseek(fd, 0, os.SEEK_CUR), size)

        store, registry = open_stores()
        with io.BufferedReader(raw, buffer_size=_READ_BUFFER) as stream:
            summary = import_findings(
                store,
                registry,
                stream,
                project_id=project,
                run_id=run,
                scanner=scanner,
                source=source,
                on_progress=progress,
            )
        if watch is not None:
            watch(size, size)
        report_to_audit({**summary.to_json(), "skipped_lines": [], "file": source})
        return {**summary.to_json(), "file": source}

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

    found = [list_findings, show_finding, triage_finding]
    return [import_file, *found] if confinement is not None else found
