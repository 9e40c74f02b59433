"""The console's findings table, run detail and audit page in a real Chromium.

Findings are imported with ``aifr findings import`` and triaged in the page through
``Runtime.invoke`` (``findings.triage``, policy and audit apply, CSRF on the form); a
run whose refund is rejected compensates its triage step and the run page shows the
steps, states, timings and the compensation; the audit page shows the chain's
verify status and the signed checkpoint ``aifr audit checkpoint`` made.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import POLICY, Server, make_project, mint, run_aifr, start_server

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("the browser tests need Debian's chromium", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"
NUCLEI = Path(__file__).parents[2] / "fixtures" / "findings" / "nuclei"
RULES = """\
  - id: alice-triages
    when: {capability: "findings.triage", principal: "alice"}
    decision: ALLOW
    reason: alice is the security lead
  - id: others-do-not-triage
    when: {capability: "findings.triage"}
    decision: DENY
    reason: only the security lead triages findings
"""
TRIAGE_THEN_REFUND = """\
name: triage-then-refund
description: Accept a finding, then refund (a human approves the refund).
inputs:
  finding: {type: string}
steps:
  - id: accept
    capability: findings.triage
    inputs: {project: webapp, finding_id: "{{ inputs.finding }}", state: accepted, reason: by workflow}
  - id: refund
    capability: shop.refund
    inputs: {order_id: 7, amount: 5}
"""


@pytest.fixture(scope="module")
def console(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    """``aifr serve`` and ``aifr worker`` over a project with imported findings."""
    project = make_project(aifr_bin, tmp_path_factory.mktemp("console-pages"), api_env)
    (project / "policies" / "default.yaml").write_text(
        POLICY.replace("rules:\n", "rules:\n" + RULES, 1)
    )
    (project / "workflows" / "triage-then-refund.yaml").write_text(TRIAGE_THEN_REFUND)
    # findings.import reads only inside the project's [fs] roots, as a user's scan would be.
    (project / "scans").mkdir()
    shutil.copy(NUCLEI / "nuclei-v3.3-recent-keys.jsonl", project / "scans")
    imported = run_aifr(
        aifr_bin,
        "findings",
        "import",
        "scans/nuclei-v3.3-recent-keys.jsonl",
        "--project",
        "webapp",
        "-p",
        str(project),
        cwd=project,
        env=api_env,
    )
    assert imported.returncode == 0, imported.stderr
    running = start_server(aifr_bin, project, api_env)
    running.tokens = {
        who: mint(aifr_bin, project, api_env, who) for who in ("alice", "bob", "carol")
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


def _sign_in(browser: object, server: Server, who: str) -> object:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{server.url}/console/sign-in")
    page.fill("input[name=token]", server.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_url("**/console/approvals*")
    return page


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)  # type: ignore[attr-defined]


def test_the_findings_table_filters_and_triages_through_the_governed_path(
    console: Server, browser: object
) -> None:
    page = _sign_in(browser, console, "alice")
    page.goto(f"{console.url}/console/findings")  # type: ignore[attr-defined]
    rows = page.locator("tr.finding")  # type: ignore[attr-defined]
    everything = rows.count()
    assert everything >= 2
    page.select_option("select[name=severity]", "critical")  # type: ignore[attr-defined]
    page.click("#filters button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url("**severity=critical*")  # type: ignore[attr-defined]
    critical = page.locator("tr.finding")  # type: ignore[attr-defined]
    assert 1 <= critical.count() < everything
    assert {
        critical.nth(i).locator("td").first.text_content() for i in range(critical.count())
    } == {"critical"}
    _shot(page, "findings-critical.png")
    first = critical.first
    finding_id = first.get_attribute("data-id")
    first.locator("select[name=state]").select_option("false_positive")
    first.locator("input[name=reason]").fill("staging host")
    first.locator("button[name=triage]").click()
    page.wait_for_url("**notice=*")  # type: ignore[attr-defined]
    assert "false_positive" in page.text_content(".notice")  # type: ignore[attr-defined]
    page.goto(f"{console.url}/console/findings?project=webapp&state=false_positive")  # type: ignore[attr-defined]
    marked = page.locator("tr.finding")  # type: ignore[attr-defined]
    assert marked.count() == 1
    assert marked.first.get_attribute("data-id") == finding_id
    _shot(page, "findings-triaged.png")
    with console.client("alice") as api:
        audit = api.get("/v1/audit", params={"limit": 1000}).json()
    triaged = [r for r in audit if r.get("capability_id") == "findings.triage"]
    assert [(r["principal"], r["outcome"]) for r in triaged] == [("alice", "ok")]


def test_a_triage_the_policy_denies_is_refused_in_the_page(
    console: Server, browser: object
) -> None:
    page = _sign_in(browser, console, "bob")
    page.goto(f"{console.url}/console/findings?project=webapp&state=open")  # type: ignore[attr-defined]
    row = page.locator("tr.finding").first  # type: ignore[attr-defined]
    finding_id = row.get_attribute("data-id")
    row.locator("select[name=state]").select_option("fixed")
    row.locator("button[name=triage]").click()
    alert = str(page.text_content("[role=alert]"))  # type: ignore[attr-defined]
    assert "policy.denied" in alert
    _shot(page, "findings-refused.png")
    with console.client("alice") as api:
        shown = api.get(f"/v1/findings/webapp/{finding_id}").json()
    assert shown["triage_state"] == "open"


def test_a_triage_form_without_the_csrf_token_is_refused(console: Server) -> None:
    with httpx.Client(base_url=console.url, follow_redirects=False) as client:
        assert (
            client.post("/console/sign-in", data={"token": console.tokens["alice"]}).status_code
            == 303
        )
        with console.client("alice") as api:
            target = api.get("/v1/findings/webapp", params={"triage_state": "open"}).json()[
                "findings"
            ][0]["id"]
        refused = client.post(f"/console/findings/webapp/{target}/triage", data={"state": "fixed"})
    assert refused.status_code == 403
    assert "transport.forbidden" in refused.text
    with console.client("alice") as api:
        assert api.get(f"/v1/findings/webapp/{target}").json()["triage_state"] == "open"


def test_the_run_page_shows_steps_timings_and_the_compensation(
    console: Server, browser: object
) -> None:
    with console.client("alice") as alice:
        target = alice.get("/v1/findings/webapp", params={"triage_state": "open"}).json()[
            "findings"
        ][0]["id"]
        started = alice.post(
            "/v1/runs", json={"workflow": "triage-then-refund", "inputs": {"finding": target}}
        )
        assert started.status_code == 201, started.text
        run = started.json()
        assert run["state"] == "waiting_approval"
        assert alice.get(f"/v1/findings/webapp/{target}").json()["triage_state"] == "accepted"
    approval = next(s["approval_id"] for s in run["steps"] if s["approval_id"])
    with console.client("carol") as carol:
        assert (
            carol.post(f"/v1/approvals/{approval}/reject", json={"comment": "no"}).status_code
            == 200
        )
    page = _sign_in(browser, console, "alice")
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline and state != "compensated":
        page.goto(f"{console.url}/console/runs/{run['id']}")  # type: ignore[attr-defined]
        state = str(page.text_content("#run-state"))  # type: ignore[attr-defined]
        page.wait_for_timeout(200)  # type: ignore[attr-defined]  # the worker compensates; bounded above
    assert state == "compensated"
    accept = page.locator("#step-accept")  # type: ignore[attr-defined]
    assert accept.locator(".state").text_content() == "compensated"
    assert "findings.triage" in str(accept.locator(".compensation").text_content())
    assert "done" in str(accept.locator(".compensation").text_content())
    assert str(accept.locator(".timing").text_content()).startswith("+")
    refund = page.locator("#step-refund")  # type: ignore[attr-defined]
    assert refund.locator(".state").text_content() != "completed"
    assert "s)." in str(page.text_content("#run-timing"))  # type: ignore[attr-defined]
    _shot(page, "run-compensated.png")
    with console.client("alice") as alice:
        assert alice.get(f"/v1/findings/webapp/{target}").json()["triage_state"] == "open"


def test_the_runs_page_shows_the_live_worker(console: Server, browser: object) -> None:
    page = _sign_in(browser, console, "alice")
    deadline = time.monotonic() + 30
    row = page.locator("table.workers tr", has_text="live")  # type: ignore[attr-defined]
    while time.monotonic() < deadline and not row.count():
        page.goto(f"{console.url}/console/runs")  # type: ignore[attr-defined]
        page.wait_for_timeout(200)  # type: ignore[attr-defined]  # the worker registers; bounded above
    assert row.count() == 1
    cells = [str(c) for c in row.locator("td").all_text_contents()]
    assert cells[0].count(":") == 2 and cells[1] == "live" and cells[3].isdigit()
    _shot(page, "runs-workers.png")


def test_the_audit_page_shows_the_verify_status_and_the_signed_checkpoint(
    console: Server, browser: object, aifr_bin: str, api_env: dict[str, str]
) -> None:
    project = console.log.parent
    page = _sign_in(browser, console, "alice")
    page.goto(f"{console.url}/console/audit")  # type: ignore[attr-defined]
    assert "No signed checkpoint yet" in str(page.text_content("#checkpoint"))  # type: ignore[attr-defined]
    signed = run_aifr(aifr_bin, "audit", "checkpoint", "-p", str(project), cwd=project, env=api_env)
    assert signed.returncode == 0, signed.stderr
    page.goto(f"{console.url}/console/audit")  # type: ignore[attr-defined]
    verify = str(page.text_content("#verify"))  # type: ignore[attr-defined]
    assert "Chain verified" in verify
    assert "signed checkpoint at" in verify
    checkpoint = str(page.text_content("#checkpoint"))  # type: ignore[attr-defined]
    assert "signed by this project's key" in checkpoint
    with console.client("alice") as api:
        report = api.get("/v1/audit/verify").json()
    assert f"record {report['checkpoint_seq']}" in checkpoint
    _shot(page, "audit-checkpoint.png")
