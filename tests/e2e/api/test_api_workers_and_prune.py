"""``GET /v1/workers``, the holder of each listed run, and ``POST /v1/runs/prune`` over real HTTP.

Pruning is a HIGH-risk DELETE route operation (``api.runs.prune``): with no rule naming
it the default for HIGH risk (DENY) refuses it; here a rule lets ``bob`` prune.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import POLICY, Server, make_project, mint, start_server

PRUNERS = """\
  - id: bob-prunes
    when:
      capability: "api.runs.prune"
      principal: "bob"
    decision: ALLOW
    reason: bob keeps the history tidy
"""


@pytest.fixture(scope="module")
def server(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    project = make_project(aifr_bin, tmp_path_factory.mktemp("prune"), api_env)
    policy = POLICY.replace("approvals:\n", PRUNERS + "approvals:\n", 1)
    (project / "policies" / "default.yaml").write_text(policy)
    tokens = {who: mint(aifr_bin, project, api_env, who) for who in ("agent", "bob")}
    running = start_server(aifr_bin, project, api_env)
    running.tokens = tokens
    yield running
    running.stop()
    print(running.stderr)


def _worker(aifr_bin: str, project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.2", "-c", "2", "-p", str(project)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert worker.stdout is not None and worker.stdout.readline(), "the worker did not start"
    return worker


def test_the_workers_of_the_database_are_listed_while_they_run(
    server: Server, aifr_bin: str, api_env: dict[str, str]
) -> None:
    worker = _worker(aifr_bin, server.log.parent, api_env)
    try:
        with server.client("agent") as client:
            listed = client.get("/v1/workers")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()
    with server.client("agent") as client:
        after = client.get("/v1/workers").json()

    assert listed.status_code == 200, listed.text
    [seen] = listed.json()
    assert seen["pid"] == worker.pid and seen["state"] == "live" and seen["concurrency"] == 2
    assert seen["id"].split(":")[1] == str(worker.pid)
    assert after == []  # a stopped worker leaves the registry


def test_finished_runs_are_pruned_by_an_allowed_principal_only(server: Server) -> None:
    body = {"workflow": "welcome", "inputs": {"name": "Ann"}}
    with server.client("agent") as agent, server.client("bob") as bob:
        run = agent.post("/v1/runs", json=body).json()
        listed = agent.get("/v1/runs").json()
        refused = agent.post("/v1/runs/prune", json={"older_than_days": 0})
        counted = bob.post("/v1/runs/prune", json={"older_than_days": 0, "dry_run": True})
        unfinished = bob.post(
            "/v1/runs/prune", json={"older_than_days": 0, "states": ["waiting_approval"]}
        )
        typo = bob.post("/v1/runs/prune", json={"older_than_days": -1})
        still_there = agent.get(f"/v1/runs/{run['id']}")
        pruned = bob.post("/v1/runs/prune", json={"older_than_days": 0, "states": ["completed"]})
        gone = agent.get(f"/v1/runs/{run['id']}")
        trail = bob.get("/v1/audit", params={"principal": "bob"})

    assert run["state"] == "completed"
    assert {"lease_owner", "lease_expires_at"} <= set(listed[0])
    assert listed[0]["lease_owner"] is None  # finished: nobody holds it
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("api.runs.prune is denied for agent")
    assert counted.status_code == 200 and counted.json()["runs"] == 1 and counted.json()["dry_run"]
    assert unfinished.status_code == 409 and unfinished.json()["code"] == "workflow.bad_state"
    assert typo.status_code == 422
    assert still_there.status_code == 200
    assert pruned.status_code == 200 and pruned.json()["runs"] == 1
    assert gone.status_code == 404
    [record] = [r for r in trail.json() if r["kind"] == "workflow.runs_pruned"]
    assert record["details"]["runs"] == [run["id"]]
    assert time.time() - pruned.json()["finished_before"] < 60
