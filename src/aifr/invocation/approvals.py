"""Durable approval requests: created by the runtime, decided by people, consumed once.

When policy answers REQUIRE_APPROVAL, the runtime asks :meth:`ApprovalService.request`
for an approval bound to the digest of the exact request (capability id and
fingerprint, canonical inputs, principal). Approvers vote through :meth:`approve` (the
policy engine says who may; nobody approves a request they made or that was made on
their behalf) until the decision's quorum is reached, or anyone allowed ends it with
:meth:`reject`. The approved request runs once: :meth:`consume` flips ``approved`` to
``consumed`` inside one write transaction, so of two concurrent executions exactly one
wins. Expired requests are marked so the first time anyone touches them.

Every state change appends its audit record in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.capabilities import CapabilitySpec, RiskLevel, digest
from aifr.errors import ApprovalError, ErrorCode
from aifr.invocation.context import new_id
from aifr.invocation.identity import check_principal
from aifr.invocation.ports import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalStore,
    ApprovalVote,
)
from aifr.policy import Decision, PolicyDecision, PolicyEngine, missing_votes

__all__ = ["ApprovalService", "request_digest"]

T = TypeVar("T")


def request_digest(
    *, capability_id: str, fingerprint: str, inputs: dict[str, JsonValue], principal: str
) -> str:
    """The digest an approval is bound to: any change to these needs a new approval."""
    return digest(
        {
            "capability_id": capability_id,
            "fingerprint": fingerprint,
            "inputs": inputs,
            "principal": principal,
        }
    )


def _event(
    record: ApprovalRecord, kind: str, actor: str, outcome: str, **details: Any
) -> AuditEvent:
    return AuditEvent(
        kind=kind,
        principal=actor,
        capability_id=record.capability_id,
        capability_fingerprint=record.fingerprint,
        decision=Decision.REQUIRE_APPROVAL.value,
        rule_id=record.rule_id,
        inputs_digest=record.request_digest,
        outcome=outcome,
        trace_id=record.request_id,
        request_id=record.request_id,
        run_id=None,
        details={"approval_id": record.id, "requester": record.principal, **details},
    )


class ApprovalService:
    """Creates, decides, lists and consumes approval requests."""

    def __init__(
        self,
        store: ApprovalStore,
        policy: PolicyEngine,
        *,
        default_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        require_authenticated: bool = False,
        audit: Callable[[AuditEvent], object] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.default_ttl_s = default_ttl_s
        self._clock = clock
        self.require_authenticated = require_authenticated
        self._audit = audit

    # -- creation (runtime) ------------------------------------------------------------

    def request(
        self,
        *,
        spec: CapabilitySpec,
        inputs: dict[str, JsonValue],
        principal: str,
        roles: frozenset[str],
        decision: PolicyDecision,
        digest_value: str,
        request_id: str,
        audit_for: Callable[[str], AuditEvent],
        workflow_id: str | None = None,
        on_behalf_of: tuple[str, ...] = (),
        idempotency_key: str | None = None,
    ) -> tuple[ApprovalRecord, AuditRecord | None]:
        """A pending request for this exact invocation: an open one is reused.

        Reused only by a call with the same ``idempotency_key``: the same request made
        by two workflow runs is two executions, and one approval runs once, so a run
        sharing another's approval would take the other's result as its own.

        ``audit_for(approval_id)`` builds the invocation's own ``pending_approval``
        audit event, appended in the transaction that creates the request; for a reused
        request nothing is appended here (the caller appends its own record).
        """
        now = self._clock()
        existing = self.store.find_open(digest_value, now, idempotency_key)
        if existing is not None:
            return existing, None
        ttl = decision.approval_ttl_s or self.default_ttl_s
        record = ApprovalRecord(
            id=f"ap-{new_id()[:16]}",
            capability_id=spec.id,
            capability_version=spec.version,
            fingerprint=spec.fingerprint,
            principal=principal,
            roles=tuple(sorted(roles)),
            inputs=inputs,
            request_digest=digest_value,
            risk=spec.effective_risk.value,
            rule_id=decision.rule_id,
            reason=decision.reason,
            approver_roles=tuple(sorted(decision.approver_roles)),
            quorum=max(1, decision.quorum),
            quorum_roles=decision.quorum_roles,
            created_at=now,
            expires_at=now + ttl,
            request_id=request_id,
            workflow_id=workflow_id,
            on_behalf_of=tuple(on_behalf_of),
            idempotency_key=idempotency_key,
        )
        audit_record = self.store.create(record, audit_for(record.id))
        return record, audit_record

    # -- reading -----------------------------------------------------------------------

    def get(self, approval_id: str) -> ApprovalRecord:
        """The request, with an overdue one marked expired first.

        Raises:
            ApprovalError: ``approval.not_found``.
        """
        record = self.store.get(approval_id)
        if record is None:
            raise _not_found(approval_id)
        if record.is_expired(self._clock()):
            record, _ = self.store.update(approval_id, self._expire)
        return record

    def list(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        """Requests, newest first; overdue pending ones read as expired."""
        now = self._clock()
        records = self.store.list(
            status=None if status is ApprovalStatus.EXPIRED else status, limit=limit
        )
        shown = [
            r.evolve(status=ApprovalStatus.EXPIRED) if r.is_expired(now) else r for r in records
        ]
        return [r for r in shown if status is None or r.status is status]

    # -- deciding ----------------------------------------------------------------------

    def approve(
        self,
        approval_id: str,
        approver: str,
        *,
        comment: str = "",
        roles: frozenset[str] = frozenset(),
        authenticated: bool = False,
    ) -> ApprovalRecord:
        """Record ``approver``'s yes; the request is approved once the quorum is reached.

        ``roles`` are roles the approver holds outside the policy's bindings (those of
        the authenticated token that made the decision). ``authenticated`` says the
        approver proved who they are (a token); with ``require_authenticated`` on, a
        decision without it is refused and audited.

        Raises:
            InputValidationError: ``approver`` is not a valid principal name.
            ApprovalError: not found, expired, already decided, self-approval, not
                authorized by policy, unauthenticated where authentication is
                required, or a second vote by the same approver.
        """
        check_principal(approver, field="approver")
        record = self.get(approval_id)
        self._require_authentication(record, approver, authenticated)
        self._check_approver(record, approver, roles)

        def change(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            self._require_status(current, ApprovalStatus.PENDING)
            if any(v.approver == approver for v in current.votes):
                raise ApprovalError(
                    f"{approver} already approved {approval_id}; the quorum needs "
                    f"{current.quorum} different approvers",
                    code=ErrorCode.APPROVAL_ALREADY_DECIDED,
                    approval_id=approval_id,
                )
            now = self._clock()
            held = tuple(sorted(self.policy.roles_of(approver) | roles))
            vote = ApprovalVote(approver=approver, at=now, comment=comment, roles=held)
            votes = (*current.votes, vote)
            reached = not missing_for(current.evolve(votes=votes))
            updated = current.evolve(
                votes=votes,
                status=ApprovalStatus.APPROVED if reached else ApprovalStatus.PENDING,
                decided_by=approver if reached else None,
                decided_at=now if reached else None,
                decision_comment=comment if reached else "",
            )
            kind = "approval.approved" if reached else "approval.vote"
            return updated, _event(
                current,
                kind,
                approver,
                updated.status.value,
                votes=len(votes),
                quorum=current.quorum,
            )

        updated, _ = self.store.update(approval_id, change)
        return updated

    def reject(
        self,
        approval_id: str,
        approver: str,
        *,
        reason: str = "",
        roles: frozenset[str] = frozenset(),
        authenticated: bool = False,
    ) -> ApprovalRecord:
        """End a pending request with a no (``roles``, ``authenticated`` as for :meth:`approve`).

        Raises:
            InputValidationError: ``approver`` is not a valid principal name.
            ApprovalError: not found, expired, already decided, self-approval, not
                authorized by policy, or unauthenticated where it is required.
        """
        check_principal(approver, field="approver")
        record = self.get(approval_id)
        self._require_authentication(record, approver, authenticated)
        self._check_approver(record, approver, roles)

        def change(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            self._require_status(current, ApprovalStatus.PENDING)
            now = self._clock()
            updated = current.evolve(
                status=ApprovalStatus.REJECTED,
                decided_by=approver,
                decided_at=now,
                decision_comment=reason,
            )
            return updated, _event(
                current, "approval.rejected", approver, "rejected", reason=reason
            )

        updated, _ = self.store.update(approval_id, change)
        return updated

    def withdraw(self, approval_id: str, actor: str, *, reason: str) -> ApprovalRecord:
        """Take back a request that no longer stands, pending or approved but unused.

        A workflow run cancelled while it waits calls this, so that nobody approves the
        step afterwards or runs it with ``aifr approvals execute``. It is no approver's
        decision, so no approver rights are checked; ``actor`` is who cancelled.

        Raises:
            ApprovalError: not found, or already rejected, expired, used or withdrawn.
        """

        def change(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            if current.status is not ApprovalStatus.APPROVED:
                self._require_status(current, ApprovalStatus.PENDING)
            updated = current.evolve(
                status=ApprovalStatus.WITHDRAWN,
                decided_by=actor,
                decided_at=self._clock(),
                decision_comment=reason,
            )
            return updated, _event(current, "approval.withdrawn", actor, "withdrawn", reason=reason)

        updated, _ = self.store.update(approval_id, change)
        return updated

    # -- consuming (runtime) -----------------------------------------------------------

    def consume(self, approval_id: str, *, digest_value: str, request_id: str) -> ApprovalRecord:
        """Claim the approved request for one execution; a second claim is refused.

        Raises:
            ApprovalError: not found; ``approval.digest_mismatch`` when the request is not
                the one approved; ``approval.required`` while pending; rejected, expired
                or ``approval.consumed``.
        """
        record = self.get(approval_id)
        if record.request_digest != digest_value:
            raise ApprovalError(
                f"approval {approval_id} was granted for a different request (capability, "
                "version, inputs or principal changed); ask for a new approval",
                code=ErrorCode.APPROVAL_DIGEST_MISMATCH,
                approval_id=approval_id,
            )

        def change(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            self._require_status(current, ApprovalStatus.APPROVED)
            updated = current.evolve(
                status=ApprovalStatus.CONSUMED,
                consumed_at=self._clock(),
                consumed_by_request=request_id,
            )
            return updated, None

        updated, _ = self.store.update(approval_id, change)
        return updated

    def finish(
        self, approval_id: str, result: dict[str, JsonValue], audit: AuditEvent
    ) -> AuditRecord | None:
        """Store the consumed request's result with the invocation's audit record.

        The record's id exists only once it is appended, so a second write links the
        stored result to it; a crash in between leaves a result without the id, never
        a result without its audit record.
        """

        def change(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            return current.evolve(result=result), audit

        _, audit_record = self.store.update(approval_id, change)
        if audit_record is not None:
            linked = {**result, "audit_id": audit_record.id, "audit_seq": audit_record.seq}

            def link(current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
                return current.evolve(result=linked), None

            self.store.update(approval_id, link)
        return audit_record

    # -- async twins -------------------------------------------------------------------

    async def aapprove(
        self,
        approval_id: str,
        approver: str,
        *,
        comment: str = "",
        roles: frozenset[str] = frozenset(),
        authenticated: bool = False,
    ) -> ApprovalRecord:
        """:meth:`approve` without blocking the event loop."""
        return await _in_thread(
            functools.partial(
                self.approve,
                approval_id,
                approver,
                comment=comment,
                roles=roles,
                authenticated=authenticated,
            )
        )

    async def areject(
        self,
        approval_id: str,
        approver: str,
        *,
        reason: str = "",
        roles: frozenset[str] = frozenset(),
        authenticated: bool = False,
    ) -> ApprovalRecord:
        """:meth:`reject` without blocking the event loop."""
        return await _in_thread(
            functools.partial(
                self.reject,
                approval_id,
                approver,
                reason=reason,
                roles=roles,
                authenticated=authenticated,
            )
        )

    async def aget(self, approval_id: str) -> ApprovalRecord:
        """:meth:`get` without blocking the event loop."""
        return await _in_thread(functools.partial(self.get, approval_id))

    # -- rules -------------------------------------------------------------------------

    def _require_authentication(
        self, record: ApprovalRecord, approver: str, authenticated: bool
    ) -> None:
        """Refuse (and audit) an unproven decision when ``require_authenticated`` is on."""
        if authenticated or not self.require_authenticated:
            return
        if self._audit is not None:
            self._audit(
                _event(record, "approval.refused", approver, "denied", reason="unauthenticated")
            )
        raise ApprovalError(
            f"{approver} cannot decide {record.id} without proving who they are: "
            "[approvals] require_authenticated is on, and a bare name (--as) proves nothing; "
            "decide with the approver's token ('--token' or AIFR_TOKEN, the API or the "
            "console)",
            code=ErrorCode.APPROVAL_UNAUTHENTICATED,
            approval_id=record.id,
            approver=approver,
        )

    def _check_approver(
        self, record: ApprovalRecord, approver: str, roles: frozenset[str] = frozenset()
    ) -> None:
        if approver == record.principal or approver in record.on_behalf_of:
            raise ApprovalError(
                f"{approver} cannot approve or reject {record.id}: nobody decides on their "
                "own request",
                code=ErrorCode.APPROVAL_SELF_APPROVAL,
                approval_id=record.id,
                approver=approver,
            )
        self.policy.check_approver(
            approver=approver,
            requester=record.principal,
            risk=RiskLevel(record.risk),
            decision=PolicyDecision(
                decision=Decision.REQUIRE_APPROVAL,
                rule_id=record.rule_id,
                reason=record.reason,
                approver_roles=record.approver_roles,
                quorum=record.quorum,
                approval_ttl_s=record.expires_at - record.created_at,
                grant_id=None,
                quorum_roles=record.quorum_roles,
            ),
            approver_roles=roles,
        )

    def _require_status(self, record: ApprovalRecord, wanted: ApprovalStatus) -> None:
        if record.is_expired(self._clock()):
            raise ApprovalError(
                f"approval {record.id} expired at {_iso(record.expires_at)}; ask again",
                code=ErrorCode.APPROVAL_EXPIRED,
                approval_id=record.id,
            )
        if record.status is wanted:
            return
        code = {
            ApprovalStatus.PENDING: ErrorCode.APPROVAL_REQUIRED,
            ApprovalStatus.REJECTED: ErrorCode.APPROVAL_REJECTED,
            ApprovalStatus.EXPIRED: ErrorCode.APPROVAL_EXPIRED,
            ApprovalStatus.CONSUMED: ErrorCode.APPROVAL_CONSUMED,
            ApprovalStatus.APPROVED: ErrorCode.APPROVAL_ALREADY_DECIDED,
            ApprovalStatus.WITHDRAWN: ErrorCode.APPROVAL_WITHDRAWN,
        }[record.status]
        raise ApprovalError(
            f"approval {record.id} is {_describe(record)}",
            code=code,
            approval_id=record.id,
            status=record.status.value,
        )

    def _expire(self, current: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
        if not current.is_expired(self._clock()):
            return current, None
        updated = current.evolve(status=ApprovalStatus.EXPIRED)
        return updated, _event(current, "approval.expired", "aifr", "expired")


def missing_for(record: ApprovalRecord) -> dict[str, int]:
    """Votes ``record`` still needs: per role of its ``quorum_roles``, ``"*"`` for any approver."""
    voters = [frozenset(vote.roles) for vote in record.votes]
    return missing_votes(voters, record.quorum_roles, record.quorum)


def _describe(record: ApprovalRecord) -> str:
    if record.status is ApprovalStatus.CONSUMED:
        return f"already used: the approved request ran at {_iso(record.consumed_at or 0)}"
    if record.status is ApprovalStatus.REJECTED:
        return f"rejected by {record.decided_by}" + (
            f": {record.decision_comment}" if record.decision_comment else ""
        )
    if record.status is ApprovalStatus.APPROVED:
        return f"already approved by {record.decided_by}"
    if record.status is ApprovalStatus.WITHDRAWN:
        return f"withdrawn by {record.decided_by}" + (
            f": {record.decision_comment}" if record.decision_comment else ""
        )
    if record.status is ApprovalStatus.PENDING:
        return f"still pending ({len(record.votes)}/{record.quorum} approvals)"
    return record.status.value


def _not_found(approval_id: str) -> ApprovalError:
    return ApprovalError(
        f"no approval request {approval_id!r}",
        code=ErrorCode.APPROVAL_NOT_FOUND,
        approval_id=approval_id,
    )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def _in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn)
