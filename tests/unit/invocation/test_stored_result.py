"""What a store keeps of a finished call: ``stored_result`` builds ``Result.to_dict()`` directly.

The runtime hands every keyed call's result to its idempotency (or approval) store as
``stored_result(...)`` instead of building a ``Result`` and converting it; the two must
give the very same JSON object, key order included, for every kind of outcome.
"""

from __future__ import annotations

import pytest

from aifr.capabilities import CapabilityRegistry, capability
from aifr.errors import ErrorCode, ExecutionError
from aifr.invocation.context import RequestContext
from aifr.invocation.records import Call, Outcome, build_result, stored_result
from aifr.invocation.result import HookFailure, Status
from aifr.policy import Decision, PolicyDecision


def _registry() -> CapabilityRegistry:
    @capability("test.echo", operation="READ", risk="LOW")
    def echo(text: str) -> dict[str, str]:
        """Echo."""
        return {"text": text}

    return CapabilityRegistry([echo])


def _call(*, resolved: bool = True, decided: PolicyDecision | None = None) -> Call:
    call = Call(
        ref="test.echo@1",
        inputs={"text": "hi"},
        principal="alice",
        context=RequestContext(principal="alice", capability_ref="test.echo", trace_id="t" * 32),
        roles=frozenset({"dev"}),
        on_behalf_of=(),
        idempotency_key="k-1",
        approval_id=None,
        workflow_id="wf",
        run_id="run-1",
        step_id="s1",
        timeout_s=None,
        hooks=None,
    )
    if resolved:
        call.capability = _registry().resolve("test.echo")
    call.decision = decided
    return call


_ALLOW = PolicyDecision(Decision.ALLOW, "allow-rest", "test capabilities")
_APPROVAL = PolicyDecision(
    Decision.REQUIRE_APPROVAL,
    "deploy",
    "needs a human",
    approver_roles=("ops", "sre"),
    quorum=2,
    approval_ttl_s=60.0,
    quorum_roles=(("ops", 1),),
)


@pytest.mark.parametrize(
    ("call", "outcome", "circuit"),
    [
        (_call(decided=_ALLOW), Outcome(Status.OK, output={"text": "hi"}), "closed"),
        (_call(decided=_ALLOW), Outcome(Status.OK, output=None), "half_open"),
        (
            _call(decided=_ALLOW),
            Outcome(Status.FAILED, error=ExecutionError("boom", capability_id="test.echo")),
            "open",
        ),
        (
            _call(decided=_APPROVAL),
            Outcome(Status.PENDING_APPROVAL, approval_id="ap-1"),
            "closed",
        ),
        (_call(resolved=False), Outcome(Status.FAILED, error=ExecutionError("no such")), "closed"),
    ],
)
def test_stored_result_is_the_result_as_json(call: Call, outcome: Outcome, circuit: str) -> None:
    expected = build_result(call, outcome, circuit, None).to_dict()

    stored = stored_result(call, outcome, circuit)

    assert stored == expected
    assert list(stored) == list(expected)


def test_stored_result_keeps_hook_failures() -> None:
    call = _call(decided=_ALLOW)
    call.hook_failures = (
        HookFailure("audit-hook", "after", "global", ErrorCode.EXECUTION_FAILED.value, "x", 1),
    )
    outcome = Outcome(Status.OK, output=[1, 2])

    assert stored_result(call, outcome, "closed") == (
        build_result(call, outcome, "closed", None).to_dict()
    )
