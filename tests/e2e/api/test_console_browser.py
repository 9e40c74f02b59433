"""The web console in a real Chromium: sign in, decide approvals of running workflows, refusals."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import Server, make_project, mint, start_server

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("the browser tests need Debian's chromium", allow_module_level=True)

GOODWILL = """\
name: goodwill
description: Greet, then refund (a human approves the refund).
inputs:
  order: {type: integer}
steps:
  - id: greet
    capability: shop.greet
    inputs: {name: "customer"}
  - id: refund
    capability: shop.refund
    inputs: {order_id: "{{ inputs.order }}", amount: 5}
"""

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"


@pytest.fixture(scope="module")
def console(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    """``aifr serve`` (API and console) and ``aifr worker`` over one project."""
    project = make_project(aifr_bin, tmp_path_factory.mktemp("console"), api_env)
    (project / "workflows" / "goodwill.yaml").write_text(GOODWILL)
    running = start_server(aifr_bin, project, api_env)
    running.tokens = {
        who: mint(aifr_bin, project, api_env, who) for who in ("agent", "alice", "bob")
    }
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.1", "-p", str(project)],
        cwd=project,
        env=api_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield running
    worker.terminate()
    worker.wait(timeout=10)
    running.stop()
    print(running.stderr)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless"]
        )
        yield launched
        launched.close()


def _start_run(server: Server, order: int) -> dict[str, object]:
    with server.client("agent") as agent:
        started = agent.post("/v1/runs", json={"workflow": "goodwill", "inputs": {"order": order}})
    assert started.status_code == 201, started.text
    run = started.json()
    assert run["state"] == "waiting_approval"
    return dict(run)


def _sign_in(browser: object, server: Server, who: str) -> object:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{server.url}/console")
    assert page.url.endswith("/console/sign-in")
    page.fill("input[name=token]", server.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_url("**/console/approvals*")
    assert page.text_content("#principal") == who
    return page


def _state_becomes(page: object, server: Server, run_id: str, wanted: str) -> str:
    deadline = time.monotonic() + 30
    state = ""
    while time.monotonic() < deadline:
        page.goto(f"{server.url}/console/runs/{run_id}")  # type: ignore[attr-defined]
        state = str(page.text_content("#run-state"))  # type: ignore[attr-defined]
        if state == wanted:
            return state
        page.wait_for_timeout(200)  # type: ignore[attr-defined]  # the worker resumes the run; bounded above
    return state


def test_an_approver_signs_in_approves_a_running_workflow_and_watches_it_complete(
    console: Server, browser: object
) -> None:
    run = _start_run(console, 11)
    page = _sign_in(browser, console, "alice")
    card = page.locator("section.approval", has_text="shop.refund").first  # type: ignore[attr-defined]
    assert "refunds move money" in card.text_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)  # type: ignore[attr-defined]
    card.locator("button[name=approve]").click()
    page.wait_for_url("**/console/approvals?notice=*")  # type: ignore[attr-defined]
    assert "approved" in page.text_content(".notice")  # type: ignore[attr-defined]
    assert _state_becomes(page, console, str(run["id"]), "completed") == "completed"
    page.screenshot(path=str(ARTIFACTS / "run-completed.png"), full_page=True)  # type: ignore[attr-defined]


def test_a_rejected_approval_makes_the_run_compensate(console: Server, browser: object) -> None:
    run = _start_run(console, 12)
    page = _sign_in(browser, console, "alice")
    card = page.locator("section.approval", has_text="12").first  # type: ignore[attr-defined]
    card.locator("button[name=reject]").click()
    page.wait_for_url("**/console/approvals?notice=*")  # type: ignore[attr-defined]
    assert "rejected" in page.text_content(".notice")  # type: ignore[attr-defined]
    final = _state_becomes(page, console, str(run["id"]), "compensated")
    assert final == "compensated"


def test_a_principal_who_may_not_approve_is_refused_in_the_page(
    console: Server, browser: object
) -> None:
    _start_run(console, 13)
    page = _sign_in(browser, console, "bob")
    card = page.locator("section.approval", has_text="13").first  # type: ignore[attr-defined]
    card.locator("button[name=approve]").click()
    assert "approval.not_authorized" in page.text_content("[role=alert]")  # type: ignore[attr-defined]
    page.screenshot(path=str(ARTIFACTS / "refused.png"), full_page=True)  # type: ignore[attr-defined]


def test_a_form_post_without_the_csrf_token_or_from_another_origin_is_refused(
    console: Server,
) -> None:
    _start_run(console, 14)
    with httpx.Client(base_url=console.url, follow_redirects=False) as client:
        signed_in = client.post("/console/sign-in", data={"token": console.tokens["alice"]})
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        with console.client("alice") as api:
            pending = api.get("/v1/approvals", params={"status": "pending"}).json()
        target = next(a["id"] for a in pending if a["inputs"].get("order_id") == 14)
        no_csrf = client.post(f"/console/approvals/{target}/approve", data={"comment": "x"})
        foreign = client.post(
            f"/console/approvals/{target}/approve",
            data={"csrf": "whatever"},
            headers={"Origin": "http://evil.example"},
        )
        anonymous = httpx.get(f"{console.url}/console/approvals", follow_redirects=False)
    assert no_csrf.status_code == 403
    assert "transport.forbidden" in no_csrf.text
    assert foreign.status_code == 403
    assert anonymous.status_code == 303
    with console.client("alice") as api:
        assert api.get(f"/v1/approvals/{target}").json()["status"] == "pending"


def test_the_inbox_shows_a_new_pending_approval_without_a_reload_by_the_user(
    console: Server, browser: object
) -> None:
    page = _sign_in(browser, console, "alice")
    _start_run(console, 15)
    page.wait_for_selector(  # type: ignore[attr-defined]
        "section.approval:has-text('\"order_id\": 15')", timeout=15_000
    )
