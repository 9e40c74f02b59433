"""``CallOptions``: everything about one governed call beyond what, with which inputs, by whom.

``Runtime.invoke`` and ``Runtime.ainvoke`` take the same value, so the two entry points
cannot drift apart and a new option is added here once. The value is frozen (a caller
may keep one and reuse it for many calls) and slotted (building one is cheap on the hot
path).
"""

from __future__ import annotations

from dataclasses import dataclass

from aifr.frozen import fast_init
from aifr.invocation.hooks import Hooks

__all__ = ["NO_OPTIONS", "CallOptions", "Roles"]

Roles = frozenset[str] | set[str] | tuple[str, ...]
"""What callers may pass as a principal's roles (normalized to a frozenset)."""


@fast_init
@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one governed call is made: identity, approval, idempotency, workflow, limits.

    Attributes:
        roles: the principal's roles, for policy (normalized to a frozenset per call).
        on_behalf_of: the delegation chain, nearest first.
        idempotency_key: a retry with the same key returns the first outcome instead of
            running again; ``""`` is refused.
        approval_id: the approval this call presents for a REQUIRE_APPROVAL decision.
        workflow_id: the workflow the call belongs to (recorded in the audit record).
        run_id: the workflow run (recorded, and bound to log records).
        step_id: the workflow step (recorded, and bound to log records).
        timeout_s: the handler's timeout for this call; giving one also asks for a hard
            timeout (see ``runtime.sync_execution``).
        hooks: call-scoped hooks, run after the global and capability ones.
        trace_id: the trace this call joins; a new one is made if ``None``.
        traceparent: a W3C ``traceparent`` the caller sent (MCP ``_meta``, an HTTP
            header); the call joins its trace (unless ``trace_id`` is given) and its span
            is the parent of the call's span. A malformed value is ignored.
    """

    roles: Roles = frozenset()
    on_behalf_of: tuple[str, ...] = ()
    idempotency_key: str | None = None
    approval_id: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    timeout_s: float | None = None
    hooks: Hooks | None = None
    trace_id: str | None = None
    traceparent: str | None = None


NO_OPTIONS = CallOptions()
"""The options of a plain call: no roles, no key, no approval, the declared timeout."""
