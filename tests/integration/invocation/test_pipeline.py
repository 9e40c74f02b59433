"""Every stage of the governed pipeline, its success and its failure, with audit."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from invocation_env import Env, build_env

from aifr.capabilities import capability
from aifr.errors import ErrorCode
from aifr.invocation import CallOptions, HookCall, Hooks, Phase, Status, current_request
from aifr.invocation.execution import SyncExecution
from aifr.observability import ContextFilter
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore


def audited_outcomes(env: Env) -> list[str]:
    return [row["outcome"] for row in env.audit_rows()]


def test_an_allowed_call_returns_validated_output_decision_audit_id_and_timing(env: Env) -> None:
    result = env.runtime.invoke("demo.echo@1", {"text": "hi", "times": 2}, "alice")
    assert result.status is Status.OK and result.ok
    assert result.output == {"text": "hihi"}
    assert result.decision is not None and result.decision.rule_id == "allow-demo"
    assert result.audit_id is not None
    assert result.capability_version == "1"
    assert result.timing is not None and result.timing.total_s > 0
    assert {"resolve", "validate", "policy", "execute", "audit"} <= set(result.timing.stages)
    assert audited_outcomes(env) == ["ok"]


def test_a_version_pin_selects_that_version(env: Env) -> None:
    assert env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice").output == {"text": "a"}
    latest = env.runtime.invoke("demo.echo", {"text": "a"}, "alice")
    assert latest.capability_version == "2"
    assert latest.output == {"text": "a", "version": "2"}


@pytest.mark.parametrize(
    ("ref", "inputs", "code"),
    [
        ("demo.nope", {}, ErrorCode.CAPABILITY_NOT_FOUND),
        ("demo.echo@7", {"text": "a"}, ErrorCode.CAPABILITY_VERSION_NOT_FOUND),
        ("demo.echo@x.y", {"text": "a"}, ErrorCode.CAPABILITY_BAD_REFERENCE),
        ("demo.echo@1", {"times": "many"}, ErrorCode.INPUT_INVALID),
        ("demo.boom", {}, ErrorCode.EXECUTION_FAILED),
        ("demo.slow", {}, ErrorCode.EXECUTION_TIMEOUT),
        ("demo.aslow", {}, ErrorCode.EXECUTION_TIMEOUT),
        ("demo.bad_output", {}, ErrorCode.OUTPUT_INVALID),
    ],
)
def test_each_failing_stage_has_its_own_code_in_result_and_audit(
    env: Env, ref: str, inputs: dict[str, object], code: ErrorCode
) -> None:
    result = env.runtime.invoke(ref, inputs, "alice")
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.code is code
    assert result.error_payload is not None
    assert result.error_payload["error"]["code"] == code.value  # type: ignore[index]
    rows = env.audit_rows()
    assert [row["outcome"] for row in rows] == [code.value]
    assert result.audit_id is not None


def test_invalid_inputs_report_path_code_expected_and_received(env: Env) -> None:
    result = env.runtime.invoke("demo.echo@1", {"times": "many"}, "alice")
    assert result.error is not None
    errors = result.error.details["errors"]
    assert isinstance(errors, list)
    by_path = {e["path"]: e for e in errors}  # type: ignore[index]
    assert set(by_path) == {"text", "times"}
    assert by_path["times"]["received"] == "many"
    assert env.calls.counted == []


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def _holding_itself() -> dict[str, object]:
    loop: dict[str, object] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(
    "inputs",
    [
        {"to": "bob", "amount": float("nan")},
        {"to": "bob", "amount": float("inf")},
        {"to": _nested(600), "amount": 1},
        {"to": "bob", "amount": 10**5000},  # past the int-to-text digit limit
        {"to": _holding_itself(), "amount": 1},
    ],
)
def test_a_value_json_cannot_hold_is_refused_as_invalid_input_and_audited(
    env: Env, inputs: dict[str, object]
) -> None:
    result = env.runtime.invoke("demo.transfer", inputs, "alice")

    assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
    assert audited_outcomes(env) == [ErrorCode.INPUT_INVALID.value]  # not audit.failed
    assert env.calls.transfers == []


def test_a_denied_call_never_executes_and_names_the_rule(env: Env) -> None:
    result = env.runtime.invoke("demo.forbidden", {}, "alice")
    assert result.status is Status.DENIED
    assert result.error is not None and result.error.code is ErrorCode.POLICY_DENIED
    assert result.error.details["rule_id"] == "forbid"
    assert result.decision is not None and result.decision.reason == "nobody may do this"
    assert audited_outcomes(env) == [ErrorCode.POLICY_DENIED.value]


@pytest.mark.parametrize(
    "who", ["", "   ", " alice", "alice\nDENY bob", "zero\u200bwidth", "x" * 300]
)
def test_a_principal_that_is_no_name_is_refused_before_anything_runs(env: Env, who: str) -> None:
    result = env.runtime.invoke("demo.transfer", {"to": "mallory", "amount": 5}, who)

    assert result.status is Status.FAILED
    assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
    assert result.error.details["errors"][0]["path"] == "principal"
    assert env.calls.transfers == []  # nothing ran, so nothing ran unaudited
    (row,) = env.audit_rows()
    assert row["principal"] == "(invalid principal)"
    assert row["details"]["principal_given"] == repr(who)[:80]
    assert row["outcome"] == ErrorCode.INPUT_INVALID.value


def test_a_handler_exception_is_wrapped_with_its_type_and_message(env: Env) -> None:
    result = env.runtime.invoke("demo.boom", {"message": "disk on fire"}, "alice")
    assert result.error is not None
    assert "RuntimeError: disk on fire" in result.error.message
    assert result.error.details["exception_type"] == "RuntimeError"


def test_an_explicit_timeout_overrides_the_specs(env: Env) -> None:
    result = env.runtime.invoke("demo.slow", {}, "alice", CallOptions(timeout_s=0.02))
    assert result.error is not None and result.error.details["timeout_s"] == 0.02


def test_ainvoke_runs_sync_and_async_handlers_on_the_loop(env: Env) -> None:
    async def main() -> list[object]:
        results = await asyncio.gather(
            env.runtime.ainvoke("demo.aecho", {"text": "a"}, "alice"),
            env.runtime.ainvoke("demo.echo@1", {"text": "b"}, "alice"),
            env.runtime.ainvoke("demo.aslow", {}, "alice"),
            env.runtime.ainvoke("demo.forbidden", {}, "alice"),
        )
        return [r.output if r.ok else r.error_code for r in results]

    assert asyncio.run(main()) == [
        {"text": "a"},
        {"text": "b"},
        ErrorCode.EXECUTION_TIMEOUT,
        ErrorCode.POLICY_DENIED,
    ]
    assert len(env.audit_rows()) == 4


def test_async_handlers_also_run_from_sync_invoke(env: Env) -> None:
    assert env.runtime.invoke("demo.aecho", {"text": "z"}, "alice").output == {"text": "z"}


def test_the_handler_sees_call_info_and_the_current_request_context(env: Env) -> None:
    seen: list[tuple[str, str]] = []

    def capture(call: HookCall) -> None:
        context = current_request()
        assert context is call.context
        seen.append((context.request_id, context.phase.value))

    hooks = Hooks()
    hooks.before(capture)
    result = env.runtime.invoke("demo.count", {"label": "x"}, "alice", CallOptions(hooks=hooks))
    assert result.output == {"label": "x", "request_id": result.request_id}
    assert seen == [(result.request_id, Phase.APPROVED.value)]


def test_the_audit_record_holds_the_inputs_digest_never_the_inputs(env: Env) -> None:
    env.runtime.invoke("demo.echo@1", {"text": "very-private-words"}, "alice")
    row = env.audit_rows()[0]
    assert "very-private-words" not in json.dumps(dict(row), default=str)
    assert row["principal"] == "alice"


def test_handlers_see_their_request_context_sync_async_and_from_either_driver(env: Env) -> None:
    for ref in ("demo.whoami", "demo.awhoami"):
        assert env.runtime.invoke(ref, {}, "zoe").output == {"principal": "zoe"}
        result = asyncio.run(env.runtime.ainvoke(ref, {}, "yan"))
        assert result.output == {"principal": "yan"}


def test_inline_execution_runs_in_the_calling_thread_and_still_reports_timeouts(
    tmp_path: Path,
) -> None:
    inline = build_env(tmp_path, sync_execution="inline")
    try:
        caller = threading.get_ident()
        seen: list[int] = []
        hooks = Hooks()
        hooks.before(lambda c: seen.append(threading.get_ident()), timeout_s=None)
        assert inline.runtime.invoke("demo.whoami", {}, "zoe", CallOptions(hooks=hooks)).ok
        late = inline.runtime.invoke("demo.dawdle", {}, "zoe")
        assert late.error_code is ErrorCode.EXECUTION_TIMEOUT
        assert seen == [caller]
        assert inline.calls.threads == [caller]
        release = threading.Event()
        hooks.after(lambda c: release.wait(10), name="hangs", timeout_s=0.05)
        try:
            result = inline.runtime.invoke("demo.whoami", {}, "zoe", CallOptions(hooks=hooks))
        finally:
            release.set()
        assert result.ok and [f.hook for f in result.hook_failures] == ["hangs"]
    finally:
        inline.runtime.close()


@pytest.mark.parametrize("mode", ["auto", "thread", "inline", "loop"])
def test_ainvoke_runs_sync_handlers_off_or_on_the_loop_as_configured(
    tmp_path: Path, mode: SyncExecution
) -> None:
    env = build_env(tmp_path, sync_execution=mode)

    async def call_all() -> tuple[int, list[object]]:
        results = [
            await env.runtime.ainvoke(ref, {}, "yan") for ref in ("demo.whoami", "demo.awhoami")
        ]
        failed = await env.runtime.ainvoke("demo.boom", {}, "yan")
        late = await env.runtime.ainvoke("demo.dawdle", {}, "yan")
        return threading.get_ident(), [
            *(r.output for r in results),
            failed.error_code,
            late.error_code,
        ]

    try:
        loop_thread, seen = asyncio.run(call_all())
        assert seen == [
            {"principal": "yan"},
            {"principal": "yan"},
            ErrorCode.EXECUTION_FAILED,
            ErrorCode.EXECUTION_TIMEOUT,
        ]
        # "loop" runs the sync handler on the caller's loop; the others never block it.
        assert (env.calls.threads == [loop_thread]) is (mode == "loop")
        assert audited_outcomes(env) == ["ok", "ok", "execution.failed", "execution.timeout"]
    finally:
        env.runtime.close()


def test_an_inline_ainvoke_cancelled_mid_call_still_finishes_and_audits(tmp_path: Path) -> None:
    env = build_env(tmp_path, sync_execution="inline")
    started, release = threading.Event(), threading.Event()
    hooks = Hooks()
    hooks.before(lambda c: (started.set(), release.wait(10)), timeout_s=None)

    async def cancel_mid_call() -> None:
        task = asyncio.ensure_future(
            env.runtime.ainvoke("demo.whoami", {}, "zoe", CallOptions(hooks=hooks))
        )
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_mid_call())
        release.set()
        for _ in range(200):
            if env.audit_rows():
                break
            threading.Event().wait(0.01)
        assert audited_outcomes(env) == ["ok"]
        assert len(env.calls.threads) == 1
    finally:
        release.set()
        env.runtime.close()


def test_a_thread_mode_ainvoke_ends_a_hung_handler_at_its_deadline_and_audits_it_once(
    tmp_path: Path,
) -> None:
    env = build_env(tmp_path, sync_execution="thread")

    async def call() -> tuple[object, float]:
        started = time.monotonic()
        result = await env.runtime.ainvoke("demo.slow", {}, "yan")
        return result, time.monotonic() - started

    try:
        result, took = asyncio.run(call())
        assert getattr(result, "error_code", None) is ErrorCode.EXECUTION_TIMEOUT
        assert took < 5  # at the 0.1 s deadline, not when the handler lets go (10 s)
        assert audited_outcomes(env) == ["execution.timeout"]
        env.calls.release.set()
        env.runtime._pools.handlers.shutdown(wait=True)  # the abandoned thread has ended
        assert audited_outcomes(env) == ["execution.timeout"]  # its late return dropped
    finally:
        env.calls.release.set()
        env.runtime.close()


def test_a_cancelled_thread_mode_ainvoke_still_audits_a_hung_handler_at_its_deadline(
    tmp_path: Path,
) -> None:
    env = build_env(tmp_path, sync_execution="thread")
    started = threading.Event()
    hooks = Hooks()
    hooks.before(lambda c: started.set(), timeout_s=None)

    async def cancel_then_wait() -> None:
        task = asyncio.ensure_future(
            env.runtime.ainvoke("demo.slow", {}, "zoe", CallOptions(hooks=hooks))
        )
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):  # the watch goes on in its own task on this loop
            if env.audit_rows():
                break
            await asyncio.sleep(0.01)

    try:
        asyncio.run(cancel_then_wait())
        assert audited_outcomes(env) == ["execution.timeout"]
    finally:
        env.calls.release.set()
        env.runtime.close()


def test_time_before_the_handler_starts_does_not_count_against_its_timeout(
    tmp_path: Path,
) -> None:
    env = build_env(tmp_path, sync_execution="thread")
    hooks = Hooks()
    hooks.before(lambda c: threading.Event().wait(0.25), timeout_s=None)  # the call has 0.1 s
    try:
        result = asyncio.run(
            env.runtime.ainvoke("demo.whoami", {}, "zoe", CallOptions(hooks=hooks, timeout_s=0.1))
        )
        assert result.ok, result.error
    finally:
        env.runtime.close()


def test_a_rate_limited_call_is_denied_with_its_own_code(env: Env) -> None:
    assert env.runtime.invoke("demo.limited", {}, "alice").ok
    limited = env.runtime.invoke("demo.limited", {}, "alice")
    assert limited.status is Status.DENIED
    assert limited.error_code is ErrorCode.POLICY_RATE_LIMITED
    assert env.audit_rows()[-1]["outcome"] == ErrorCode.POLICY_RATE_LIMITED.value


def test_when_the_audit_append_fails_the_result_says_so_and_the_key_is_released(
    env: Env,
) -> None:
    assert env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice").ok
    saboteur = env.database.new_connection()
    saboteur.execute("ALTER TABLE audit_records RENAME TO audit_records_gone")
    saboteur.close()
    result = env.runtime.invoke(
        "demo.count", {"label": "x"}, "alice", CallOptions(idempotency_key="k")
    )
    assert result.status is Status.FAILED
    assert result.error_code is ErrorCode.STORAGE_FAILED
    assert result.audit_id is None and result.output is None
    assert env.calls.counted == ["x"]
    assert SqliteIdempotencyStore(env.database, env.ledger).get("alice", "k") is None


def test_log_records_of_a_call_carry_its_request_trace_and_principal(env: Env) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("aifr")
    logger.addHandler(handler)
    try:
        result = env.runtime.invoke("demo.boom", {}, "alice", CallOptions(trace_id="trace-7"))
    finally:
        logger.removeHandler(handler)
    stamped = [r for r in records if "demo.boom" in r.getMessage()]
    assert stamped, "the failing handler should have been logged"
    assert {(r.request_id, r.trace_id, r.principal) for r in stamped} == {  # type: ignore[attr-defined]
        (result.request_id, "trace-7", "alice")
    }


def test_nan_and_null_inputs_never_share_a_digest() -> None:
    """Approvals and idempotency keys are bound to the digest: lossy encoding would let
    one approved request stand for another."""
    from datetime import date

    from aifr.errors import InputValidationError
    from aifr.invocation.records import inputs_digest

    assert inputs_digest({"when": date(2026, 1, 1), "x": None})
    for unencodable in (float("nan"), float("-inf")):
        with pytest.raises(InputValidationError):
            inputs_digest({"x": unencodable})
        with pytest.raises(InputValidationError):
            inputs_digest({"when": date(2026, 1, 1), "x": unencodable})


def test_an_empty_idempotency_key_is_refused_not_taken_for_no_key(env: Env) -> None:
    """A retry with an unset $KEY would otherwise run the action twice."""
    result = env.runtime.invoke(
        "demo.count", {"label": "x"}, "alice", CallOptions(idempotency_key="")
    )

    assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
    assert result.error.errors[0].path == "idempotency_key"
    assert audited_outcomes(env) == [ErrorCode.INPUT_INVALID.value]
    assert env.calls.counted == []


@pytest.mark.parametrize("mode", ["auto", "thread", "inline"])
def test_closing_the_runtime_waits_for_a_left_call_no_longer_than_its_timeout(
    tmp_path: Path, mode: SyncExecution
) -> None:
    """An MCP client left mid-call and its loop ended: the hung handler (released after
    10 s) must not hold up shutdown much past its 0.1 s timeout."""
    env = build_env(tmp_path, sync_execution=mode)

    async def leave_mid_call() -> None:
        task = asyncio.create_task(env.runtime.ainvoke("demo.slow", {}, "alice"))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(leave_mid_call())
    started = time.monotonic()
    env.runtime.close()
    waited = time.monotonic() - started
    env.calls.release.set()

    assert waited < 5


def test_one_options_value_carries_the_same_call_through_invoke_and_ainvoke(env: Env) -> None:
    options = CallOptions(
        roles=("ops",),
        on_behalf_of=("bob",),
        workflow_id="wf",
        run_id="run-1",
        step_id="s1",
        trace_id="trace-1",
    )
    done = [
        env.runtime.invoke("demo.whoami", {}, "alice", options),
        asyncio.run(env.runtime.ainvoke("demo.whoami", {}, "alice", options)),
    ]

    assert [r.trace_id for r in done] == ["trace-1", "trace-1"]
    for row in env.audit_rows():
        details = row["details"]
        assert (row["trace_id"], row["run_id"]) == ("trace-1", "run-1")
        assert details["roles"] == ["ops"] and details["on_behalf_of"] == ["bob"]
        assert (details["workflow_id"], details["step_id"]) == ("wf", "s1")
    assert len(env.audit_rows()) == 2


def test_auto_runs_a_handler_inline_unless_its_call_asks_for_a_hard_timeout(
    tmp_path: Path,
) -> None:
    env = build_env(tmp_path, sync_execution="auto")
    caller = threading.get_ident()
    try:
        assert env.runtime.invoke("demo.whoami", {}, "zoe").ok  # declares no timeout
        assert env.calls.threads == [caller]
        assert env.runtime.invoke("demo.whoami", {}, "zoe", CallOptions(timeout_s=2)).ok
        assert env.calls.threads[1] != caller  # the call's own timeout is a hard one
        started = time.monotonic()
        hung = env.runtime.invoke("demo.slow", {}, "zoe")  # declares 0.1 s, hangs 10 s
        took = time.monotonic() - started
        assert hung.error_code is ErrorCode.EXECUTION_TIMEOUT
        assert took < 5  # cut off at its declared deadline, not when the handler lets go
        late = env.runtime.invoke("demo.dawdle", {}, "zoe")  # declared 0.05 s, returns at 0.2
        assert late.error_code is ErrorCode.EXECUTION_TIMEOUT
        assert audited_outcomes(env) == ["ok", "ok", "execution.timeout", "execution.timeout"]
    finally:
        env.calls.release.set()
        env.runtime.close()


def test_auto_ends_a_hung_handler_with_a_declared_timeout_at_its_deadline_under_ainvoke(
    tmp_path: Path,
) -> None:
    env = build_env(tmp_path, sync_execution="auto")

    async def call() -> tuple[object, float]:
        started = time.monotonic()
        result = await env.runtime.ainvoke("demo.slow", {}, "yan")
        return result, time.monotonic() - started

    try:
        result, took = asyncio.run(call())
        assert getattr(result, "error_code", None) is ErrorCode.EXECUTION_TIMEOUT
        assert took < 5
        assert audited_outcomes(env) == ["execution.timeout"]
    finally:
        env.calls.release.set()
        env.runtime.close()


def test_a_capability_without_a_declared_timeout_gets_the_runtimes_default() -> None:
    @capability("demo.plain", operation="READ", risk="LOW")
    def plain() -> None:
        """Declares nothing."""

    @capability("demo.bounded", operation="READ", risk="LOW", timeout_s=3)
    def bounded() -> None:
        """Declares its timeout."""

    assert "timeout_s" not in plain.spec.model_fields_set
    assert plain.spec.timeout_s == 30.0  # what is shown; the runtime applies its default
    assert "timeout_s" in bounded.spec.model_fields_set and bounded.spec.timeout_s == 3
