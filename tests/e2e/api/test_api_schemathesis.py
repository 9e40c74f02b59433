"""schemathesis against the live OpenAPI document, authenticated: no 5xx, bodies match it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_harness import Server, make_project, mint, start_server

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")

from hypothesis import HealthCheck, given, settings  # noqa: E402  # after the importorskip above
from schemathesis.checks import not_a_server_error  # noqa: E402  # after the importorskip above
from schemathesis.specs.openapi.checks import (  # noqa: E402  # after the importorskip above
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def live(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    """A running ``aifr serve`` for generated requests, with an approver's token."""
    project = make_project(aifr_bin, tmp_path_factory.mktemp("fuzz"), api_env)
    running = start_server(aifr_bin, project, api_env)
    running.tokens = {"alice": mint(aifr_bin, project, api_env, "alice")}
    yield running
    running.stop()
    print(running.stderr)


def test_generated_requests_never_get_a_5xx_and_bodies_match_the_schema(live: Server) -> None:
    headers = {"Authorization": f"Bearer {live.tokens['alice']}"}
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json", headers=headers)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 14

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            # A generous timeout: on a shared 2-core host a request can wait seconds.
            case.call_and_validate(
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=60,
            )

        run()
