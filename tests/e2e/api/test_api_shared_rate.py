"""Per-token rate limits are shared: two ``aifr serve`` processes on one state database."""

from __future__ import annotations

from pathlib import Path

from api_harness import make_project, mint, start_server

RATE_TOML = "\n[api]\nrate_per_s = 0.01\nburst = 6\n"


def _two_servers_spend_one_bucket(
    aifr_bin: str, project: Path, env: dict[str, str], token: str
) -> None:
    first = start_server(aifr_bin, project, env)
    second = start_server(aifr_bin, project, env)
    try:
        assert first.url != second.url
        first.tokens = second.tokens = {"agent": token}
        with first.client("agent") as one, second.client("agent") as two:
            answers = [(one if i % 2 == 0 else two).get("/ready") for i in range(10)]
        codes = [a.status_code for a in answers]
        # six tokens in the one bucket, whichever process spends them; per-process
        # buckets would have let ten through
        assert codes == [200] * 6 + [429] * 4, codes
        for limited in answers[6:]:
            assert limited.json()["code"] == "transport.rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
    finally:
        first.stop()
        second.stop()


def test_two_api_processes_on_one_sqlite_file_share_a_tokens_rate(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, api_env, extra_toml=RATE_TOML)
    token = mint(aifr_bin, project, api_env, "agent")
    _two_servers_spend_one_bucket(aifr_bin, project, api_env, token)


def test_two_api_processes_on_one_postgresql_schema_share_a_tokens_rate(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str], pg_url: str
) -> None:
    env = {**api_env, "AIFR_DATABASE_URL": pg_url}
    project = make_project(aifr_bin, tmp_path, env, extra_toml=RATE_TOML)
    token = mint(aifr_bin, project, env, "agent")
    _two_servers_spend_one_bucket(aifr_bin, project, env, token)


def test_a_token_of_another_principal_has_its_own_bucket(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, api_env, extra_toml=RATE_TOML)
    spent, fresh = (
        mint(aifr_bin, project, api_env, "agent"),
        mint(aifr_bin, project, api_env, "bob"),
    )
    server = start_server(aifr_bin, project, api_env)
    try:
        server.tokens = {"agent": spent, "bob": fresh}
        with server.client("agent") as client:
            assert [client.get("/ready").status_code for _ in range(7)][-1] == 429
        with server.client("bob") as client:
            assert client.get("/ready").status_code == 200
    finally:
        server.stop()
