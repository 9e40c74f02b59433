"""``aifr serve --metrics``: Prometheus scrapes a running server, with a token.

The server is a real ``aifr serve`` subprocess; the scrape is a plain HTTP GET as
Prometheus makes it, parsed with prometheus-client's own text parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import Server, make_project, mint, start_server
from prometheus_client.parser import text_string_to_metric_families

DENY_OUTSIDER = """\
rules:
  - id: no-metrics-for-outsiders
    when:
      capability: "api.metrics.*"
      principal: "outsider"
    decision: DENY
    reason: outsiders do not scrape
"""


@pytest.fixture(scope="module")
def scraped(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    project = make_project(aifr_bin, tmp_path_factory.mktemp("metrics"), api_env)
    policy = project / "policies" / "default.yaml"  # first match wins: before allow-reads
    policy.write_text(policy.read_text().replace("rules:\n", DENY_OUTSIDER, 1))
    tokens = {who: mint(aifr_bin, project, api_env, who) for who in ("agent", "outsider")}
    running = start_server(aifr_bin, project, api_env, "--metrics")
    running.tokens = tokens
    yield running
    running.stop()
    print(running.stderr)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_the_servers_invocations_and_read_its_levels(scraped: Server) -> None:
    with scraped.client("agent") as client:
        for name in ("Ann", "Bo"):
            done = client.post(
                "/v1/capabilities/shop.greet/invoke", json={"inputs": {"name": name}}
            )
            assert done.status_code == 200, done.text
        denied = client.post(
            "/v1/capabilities/shop.orders.cancel/invoke", json={"inputs": {"order_id": 1}}
        )
        assert denied.status_code == 403
        run = client.post("/v1/runs", json={"workflow": "welcome", "inputs": {"name": "Cy"}})
        assert run.status_code == 201, run.text
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)
    ok = ("aifr_invocations_total", (("capability", "shop.greet"), ("decision", "ALLOW")))
    assert samples[(ok[0], (*ok[1], ("outcome", "ok")))] == 4.0  # 2 calls + 2 workflow steps
    denied_key = (
        "aifr_invocations_total",
        (("capability", "shop.orders.cancel"), ("decision", "DENY"), ("outcome", "denied")),
    )
    assert samples[denied_key] == 1.0
    count = ("aifr_invocation_duration_seconds_count", ok[1])
    assert samples[count] == 4.0
    assert samples[("aifr_workflow_runs", (("state", "completed"),))] == 1.0
    assert samples[("aifr_workflow_queue_depth", ())] == 0.0
    assert ("aifr_notifications_pending", ()) in samples
    assert samples[("aifr_audit_append_seconds_count", ())] >= 5.0


def test_metrics_need_a_token_and_the_policy_can_refuse_a_principal(scraped: Server) -> None:
    anonymous = httpx.get(f"{scraped.url}/metrics", timeout=30)
    assert anonymous.status_code == 401
    assert "aifr_invocations_total" not in anonymous.text
    with scraped.client("outsider") as client:
        refused = client.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["details"]["rule"] == "no-metrics-for-outsiders"


def test_without_the_flag_there_is_no_metrics_route(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, api_env)
    token = mint(aifr_bin, project, api_env, "agent")
    running = start_server(aifr_bin, project, api_env)
    try:
        plain = httpx.get(
            f"{running.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    finally:
        running.stop()
    assert plain.status_code == 404
