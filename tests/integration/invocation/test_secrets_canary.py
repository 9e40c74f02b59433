"""Canary secrets: resolved for the handler, absent from every other channel."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from invocation_env import Env, build_env

from aifr.errors import ErrorCode
from aifr.invocation import CallOptions, HookCall, Hooks, LifecycleEvent, Result
from aifr.observability.logs import JsonLogFormatter
from keyring_kit import memory_keyring

ENV_CANARY = "canary-env-7f3a9c0e41b2"
FILE_CANARY = "canary-file-d81e55a0c93f"
KEYRING_CANARY = "canary-keyring-2b94e6c1f07d"
KEYRING_SERVICE = "aifr-canary"


@pytest.fixture
def canary_env(tmp_path: Path) -> Iterator[Env]:
    built = build_env(tmp_path, environ={"API_TOKEN": ENV_CANARY}, keyring_service=KEYRING_SERVICE)
    (tmp_path / "secrets" / "FILE_TOKEN").write_text(FILE_CANARY + "\n")
    with memory_keyring(KEYRING_SERVICE, {"OS_TOKEN": KEYRING_CANARY}):
        yield built
    built.runtime.close()
    built.database.close()


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "aifr.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("aifr")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield path
    logger.removeHandler(handler)
    logger.setLevel(previous)
    handler.close()


def assert_no_canary(text: str, where: str) -> None:
    for canary in (ENV_CANARY, FILE_CANARY, KEYRING_CANARY):
        assert canary not in text, f"secret leaked into {where}"


def test_canary_secrets_reach_the_handler_and_no_other_channel(
    canary_env: Env, log_file: Path
) -> None:
    env = canary_env
    events: list[LifecycleEvent] = []
    env.runtime.events.subscribe(events.append)
    hooks = Hooks()
    hook_seen: list[str] = []

    def nosy(call: HookCall) -> None:
        hook_seen.append(json.dumps([call.inputs, call.output], default=str))
        raise RuntimeError(f"hook saw {call.output}")

    hooks.after(nosy)
    hooks.cleanup(nosy)
    results: list[Result] = []
    for ref in ("secret://API_TOKEN", "secret://FILE_TOKEN", "secret://OS_TOKEN"):
        for mode in ("echo", "raise", "aifr"):
            results.append(
                env.runtime.invoke(
                    "demo.use_token",
                    {"token": ref, "mode": mode},
                    "alice",
                    CallOptions(hooks=hooks),
                )
            )
    results.append(
        asyncio.run(env.runtime.ainvoke("demo.use_token", {"token": "secret://API_TOKEN"}, "alice"))
    )
    assert env.calls.seen_tokens.count(ENV_CANARY) == 4
    assert env.calls.seen_tokens.count(FILE_CANARY) == 3
    assert env.calls.seen_tokens.count(KEYRING_CANARY) == 3
    assert results[0].ok and results[0].output == {"echo": "used [secret:API_TOKEN]"}
    assert results[1].error_code is ErrorCode.EXECUTION_FAILED
    assert results[2].error_code is ErrorCode.EXECUTION_FAILED
    for result in results:
        assert_no_canary(json.dumps(result.to_dict(), default=str), "a result")
        assert_no_canary(repr(result), "a result's repr")
        if result.error is not None:
            assert_no_canary(repr(result.error) + str(result.error), "an error")
            assert result.error.__cause__ is None
    for event in events:
        assert_no_canary(repr(event), "a lifecycle event")
    for seen in hook_seen:
        assert_no_canary(seen, "a hook")
    env.runtime.close()
    env.database.close()
    for path in env.path.glob("state.db*"):
        assert_no_canary(path.read_bytes().decode("latin-1"), f"the database file {path.name}")
    assert_no_canary(log_file.read_text(), "the logs")
    assert log_file.read_text(), "the scenario should have logged something"


def test_references_are_what_approval_requests_store(canary_env: Env) -> None:
    env = canary_env
    pending = env.runtime.invoke(
        "demo.transfer", {"to": "secret://API_TOKEN", "amount": 1}, "alice"
    )
    assert pending.approval_id is not None
    record = env.approvals.get(pending.approval_id)
    assert record.inputs["to"] == "secret://API_TOKEN"
    env.approvals.approve(pending.approval_id, "bob")
    done = env.runtime.invoke(
        "demo.transfer", record.inputs, "alice", CallOptions(approval_id=pending.approval_id)
    )
    assert done.ok and done.output == {"sent": 1, "to": "[secret:API_TOKEN]"}
    assert env.calls.transfers == [{"to": ENV_CANARY, "amount": 1}]


def test_an_unknown_secret_fails_before_the_handler_runs(canary_env: Env) -> None:
    result = canary_env.runtime.invoke("demo.use_token", {"token": "secret://MISSING"}, "alice")
    assert result.error_code is ErrorCode.SECRET_NOT_FOUND
    assert "MISSING" in (result.error.message if result.error else "")
    assert canary_env.calls.seen_tokens == []


@pytest.mark.parametrize(
    ("ref", "inputs", "principal", "chain", "denied_for"),
    [
        # an agent steers a granted secret into a capability that echoes it back
        ("demo.echo@1", {"text": "secret://API_TOKEN"}, "alice", (), "alice"),
        # a principal the grant does not name asks for it where it is allowed
        ("demo.use_token", {"token": "secret://API_TOKEN"}, "mallory", (), "mallory"),
        # a granted caller acting for someone who is not granted
        ("demo.use_token", {"token": "secret://API_TOKEN"}, "alice", ("mallory",), "mallory"),
        # a secret no grant names
        ("demo.use_token", {"token": "secret://DB_PASSWORD"}, "alice", (), "alice"),
    ],
)
def test_a_secret_reference_no_policy_grant_covers_is_denied_before_resolution(
    canary_env: Env,
    ref: str,
    inputs: dict[str, object],
    principal: str,
    chain: tuple[str, ...],
    denied_for: str,
) -> None:
    env = canary_env
    result = env.runtime.invoke(ref, inputs, principal, CallOptions(on_behalf_of=chain))
    assert result.status.value == "denied"
    assert result.error_code is ErrorCode.POLICY_DENIED
    assert result.decision is not None and result.decision.rule_id is not None
    assert result.decision.rule_id.startswith("secret:")
    assert f"not granted to {denied_for!r}" in (result.error.message if result.error else "")
    assert env.calls.seen_tokens == [], "the handler must not run"
    assert_no_canary(json.dumps(result.to_dict(), default=str), "the result")
    row = env.audit_rows()[-1]
    assert row["outcome"] == ErrorCode.POLICY_DENIED.value
    assert row["rule_id"] == result.decision.rule_id
    assert_no_canary(json.dumps(dict(row), default=str), "the audit record")
