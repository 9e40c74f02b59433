"""Signed approval webhooks through the outbox, and the signed approval callback."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import uvicorn
from wf_env import WfEnv, build_wf_env

from aifr.errors import ErrorCode
from aifr.workflows import RunState, WorkflowBuilder, WorkflowSpec
from aifr.workflows.notify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    approval_callback_app,
    sign,
    verify_signature,
)

SECRET = b"webhook-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def _deploy_spec() -> WorkflowSpec:
    return WorkflowBuilder("deploy").step("deploy", "ops.deploy", service="web").build()


def _wait(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_an_approval_webhook_is_retried_while_the_receiver_is_down_then_delivered_signed(
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = build_wf_env(tmp_path, webhook_url=f"http://127.0.0.1:{port}/hook")
    now = [time.time()]
    notifier = WebhookNotifier(env.runs, SECRET, timeout_s=2, backoff_s=10, clock=lambda: now[0])
    try:
        paused = env.engine.start(_deploy_spec(), {}, "agent")
        assert paused.state is RunState.WAITING_APPROVAL

        assert notifier.deliver_due() == 0  # nobody listening yet
        assert env.runs.pending() == 1
        assert notifier.deliver_due() == 0  # not due again before the backoff
        _Receiver.received = []
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        now[0] += 11
        assert notifier.deliver_due() == 1
        assert env.runs.pending() == 0
        server.shutdown()
        server.server_close()
    finally:
        notifier.close()
        env.close()

    ((headers, body),) = _Receiver.received
    payload = json.loads(body)
    assert payload["approval_id"] == paused.step("deploy").approval_id
    assert payload["run_id"] == paused.run.id
    verify_signature(
        SECRET,
        body,
        timestamp=headers[TIMESTAMP_HEADER],
        signature=headers[SIGNATURE_HEADER],
        now=now[0],
        window_s=300,
    )


@pytest.fixture
def callback(env: WfEnv) -> Iterator[tuple[str, list[str]]]:
    decided: list[str] = []
    app = approval_callback_app(env.approvals, SECRET, window_s=60, on_decided=decided.append)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", decided
    server.should_exit = True
    thread.join(10)


def _post(
    url: str, payload: dict, *, ts: int | None = None, secret: bytes = SECRET
) -> httpx.Response:
    body = json.dumps(payload).encode()
    sent = ts if ts is not None else int(time.time())
    headers = {TIMESTAMP_HEADER: str(sent), SIGNATURE_HEADER: sign(secret, sent, body)}
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_a_signed_approval_callback_resumes_the_run_and_bad_ones_are_refused(
    env: WfEnv, callback: tuple[str, list[str]]
) -> None:
    base, decided = callback
    paused = env.engine.start(_deploy_spec(), {}, "agent")
    approval_id = paused.step("deploy").approval_id
    url = f"{base}/approvals/{approval_id}/decision"
    yes = {"approval_id": approval_id, "decision": "approve", "approver": "bob", "comment": "ok"}

    forged = _post(url, yes, secret=b"wrong")
    stale = _post(url, yes, ts=int(time.time()) - 3600)
    own = _post(url, {"approval_id": approval_id, "decision": "approve", "approver": "agent"})
    stranger = _post(
        url, {"approval_id": approval_id, "decision": "approve", "approver": "mallory"}
    )
    garbled = _post(url, {"approval_id": approval_id, "decision": "maybe", "approver": "bob"})

    assert [r.status_code for r in (forged, stale)] == [401, 401]
    assert forged.json()["error"]["code"] == ErrorCode.APPROVAL_BAD_SIGNATURE.value
    assert own.json()["error"]["code"] == ErrorCode.APPROVAL_SELF_APPROVAL.value
    assert stranger.json()["error"]["code"] == ErrorCode.APPROVAL_NOT_AUTHORIZED.value
    assert garbled.json()["error"]["code"] == ErrorCode.APPROVAL_INVALID.value
    assert decided == []

    body = json.dumps(yes).encode()
    sent = int(time.time())
    headers = {TIMESTAMP_HEADER: str(sent), SIGNATURE_HEADER: sign(SECRET, sent, body)}
    accepted = httpx.post(url, content=body, headers=headers, timeout=10)
    replayed = httpx.post(url, content=body, headers=headers, timeout=10)

    assert accepted.status_code == 200
    assert accepted.json()["status"] == "approved"
    assert replayed.status_code == 401
    assert decided == [approval_id]
    (view,) = env.engine.recover()
    assert view.state is RunState.COMPLETED
    assert env.effects.log == [("deploy", "web")]


def test_a_decision_signed_for_one_approval_cannot_decide_another(
    env: WfEnv, callback: tuple[str, list[str]]
) -> None:
    """The signature covers the body, so the body must name the approval it decides.

    Otherwise bob's signed approval of one request, captured on the way, could be posted
    to another request's URL: at a second worker, or at this one after a restart, whose
    memory of used signatures is gone.
    """
    base, decided = callback

    def deploy(service: str) -> str | None:
        spec = WorkflowBuilder("deploy").step("deploy", "ops.deploy", service=service).build()
        return env.engine.start(spec, {}, "agent").step("deploy").approval_id

    first, second = deploy("web"), deploy("db")
    assert first is not None and second is not None and first != second
    body = json.dumps({"approval_id": first, "decision": "approve", "approver": "bob"}).encode()
    sent = int(time.time())
    headers = {TIMESTAMP_HEADER: str(sent), SIGNATURE_HEADER: sign(SECRET, sent, body)}

    retargeted = httpx.post(
        f"{base}/approvals/{second}/decision", content=body, headers=headers, timeout=10
    )
    unnamed = _post(
        f"{base}/approvals/{second}/decision", {"decision": "approve", "approver": "bob"}
    )

    assert retargeted.status_code == 401
    assert retargeted.json()["error"]["code"] == ErrorCode.APPROVAL_BAD_SIGNATURE.value
    assert "signed for approval" in retargeted.json()["error"]["message"]
    assert unnamed.json()["error"]["code"] == ErrorCode.APPROVAL_INVALID.value
    assert "approval_id" in unnamed.json()["error"]["message"]
    assert decided == []
    assert env.approvals.get(second).status.value == "pending"

    accepted = _post(
        f"{base}/approvals/{first}/decision",
        {"approval_id": first, "decision": "approve", "approver": "bob", "comment": "mine"},
    )
    assert accepted.status_code == 200
    assert decided == [first]
    assert env.approvals.get(second).status.value == "pending"
