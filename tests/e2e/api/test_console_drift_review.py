"""The console's drift review: a run paused because a capability changed, accepted in Chromium.

A run pauses at its approval; the refund capability then changes (a new optional
input, so a new fingerprint); ``aifr worker`` resumes the approved run, sees the drift
and parks it in ``needs_review``. A freshly started ``aifr serve`` (the new code) shows
the changed step with both fingerprints; the run's own principal may not accept it;
another principal accepts and the run is driven on (the refund's approval was
for the old code, so it is not reused: the run compensates, as the page shows).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import CAPABILITIES, Server, make_project, mint, run_aifr, start_server

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("the browser tests need Debian's chromium", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"
REFUND_ONLY = """\
name: refund-only
description: One refund a human approves.
steps:
  - id: refund
    capability: shop.refund
    inputs: {order_id: 9, amount: 3}
"""


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless"]
        )
        yield launched
        launched.close()


def _sign_in(browser: object, server: Server, who: str) -> object:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{server.url}/console/sign-in")
    page.fill("input[name=token]", server.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_url("**/console/approvals*")
    return page


def test_a_drifted_run_is_reviewed_and_resumed_in_the_console(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str], browser: object
) -> None:
    project = make_project(aifr_bin, tmp_path, api_env)
    (project / "workflows" / "refund-only.yaml").write_text(REFUND_ONLY)
    tokens = {who: mint(aifr_bin, project, api_env, who) for who in ("agent", "alice", "carol")}
    before = start_server(aifr_bin, project, api_env)
    before.tokens = tokens
    try:
        with before.client("agent") as agent:
            run = agent.post("/v1/runs", json={"workflow": "refund-only", "inputs": {}}).json()
        assert run["state"] == "waiting_approval"
        approval = run["steps"][0]["approval_id"]
        with before.client("alice") as alice:
            assert alice.post(f"/v1/approvals/{approval}/approve", json={}).status_code == 200
    finally:
        before.stop()
    changed = CAPABILITIES.replace(
        "def refund(order_id: int, amount: float)",
        'def refund(order_id: int, amount: float, note: str = "")',
    )
    assert changed != CAPABILITIES
    (project / "api_caps.py").write_text(changed)
    worker = run_aifr(aifr_bin, "worker", "--once", "-p", str(project), cwd=project, env=api_env)
    assert worker.returncode == 0, worker.stderr
    after = start_server(aifr_bin, project, api_env)
    after.tokens = tokens
    try:
        with after.client("alice") as alice:
            assert alice.get(f"/v1/runs/{run['id']}").json()["state"] == "needs_review"
        own = _sign_in(browser, after, "agent")
        own.goto(f"{after.url}/console/runs/{run['id']}")  # type: ignore[attr-defined]
        own.click("button[name=accept-drift]")  # type: ignore[attr-defined]
        assert "approval.self_approval" in str(own.text_content("[role=alert]"))  # type: ignore[attr-defined]
        page = _sign_in(browser, after, "carol")
        page.goto(f"{after.url}/console/findings")  # type: ignore[attr-defined]
        assert "No findings yet" in str(page.text_content("main"))  # type: ignore[attr-defined]
        page.goto(f"{after.url}/console/runs/{run['id']}")  # type: ignore[attr-defined]
        review = page.locator("#drift-review")  # type: ignore[attr-defined]
        row = review.locator("tr.drifted")
        assert row.count() == 1
        cells = [row.locator("td").nth(i).text_content() for i in range(4)]
        assert cells[0] == "refund"
        assert cells[2] and cells[3] and cells[2] != cells[3]
        assert "approval.digest_mismatch" in str(review.locator("#stale-approval").text_content())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "drift-review.png"), full_page=True)  # type: ignore[attr-defined]
        review.locator("button[name=accept-drift]").click()
        page.wait_for_url("**notice=*")  # type: ignore[attr-defined]
        assert "carol" in str(page.text_content(".notice"))  # type: ignore[attr-defined]
        with after.client("alice") as alice:
            final = alice.get(f"/v1/runs/{run['id']}").json()
        # accepted: the run left the review and was driven on. The refund's approval
        # was granted for the old code, so the runtime refuses to reuse it for the new
        # one (approval.digest_mismatch) and the run compensates; the page shows it.
        assert final["state"] == "compensated", final
        assert page.text_content("#run-state") == "compensated"  # type: ignore[attr-defined]
        assert page.locator("#drift-review").count() == 0  # type: ignore[attr-defined]
        assert final["steps"][0]["error"]["code"] == "approval.digest_mismatch"
        assert "approval.digest_mismatch" in str(page.text_content("#steps"))  # type: ignore[attr-defined]
        assert not (project / "effects.log").exists()  # the old approval moved no money
        with after.client("alice") as alice:
            audit = alice.get("/v1/audit", params={"limit": 1000}).json()
        kinds = [(r["kind"], r["principal"]) for r in audit]
        assert ("workflow.review_accepted", "carol") in kinds, kinds
    finally:
        after.stop()
        print(after.stderr)
