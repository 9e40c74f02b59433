"""``aifr mcp config`` snippets and ``aifr mcp token`` management, as a user runs them."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_harness import ServerProcess, make_project, run_aifr


def test_claude_snippet_launches_aifr_over_stdio_for_this_project(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    result = run_aifr(
        aifr_bin,
        "mcp",
        "config",
        "--client",
        "claude",
        "-p",
        str(project),
        cwd=tmp_path,
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["mcpServers"]["aifr"]
    assert Path(entry["command"]).name == "aifr"
    assert entry["args"] == [
        "mcp",
        "--transport",
        "stdio",
        "--tool-names",
        "portable",
        "-p",
        str(project.resolve()),
    ]
    assert "claude_desktop_config.json" in result.stderr

    async def listed() -> list[str]:
        # Launched exactly as the snippet says, from another folder, as Claude Desktop does.
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=clean_env)
        with anyio.fail_after(60):
            async with Client(params) as client:
                return [tool.name for tool in (await client.list_tools()).tools]

    names = anyio.run(listed)
    assert "shop_greet" in names and "workflow_welcome" in names
    # Claude Desktop refuses the whole list when one name fails this rule.
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in names), names


def test_cursor_http_snippet_points_at_the_url_with_a_bearer_header(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    result = run_aifr(
        aifr_bin,
        "mcp",
        "config",
        "--client",
        "cursor",
        "--transport",
        "http",
        "-p",
        str(project),
        cwd=tmp_path,
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["mcpServers"]["aifr"]
    assert entry["url"] == "http://127.0.0.1:8765/mcp"
    assert entry["headers"]["Authorization"].startswith("Bearer ")
    assert "aifr mcp --transport http --tool-names portable" in result.stderr


def test_config_outside_a_project_fails_with_the_project_error(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = run_aifr(aifr_bin, "mcp", "config", "-p", str(tmp_path), cwd=tmp_path, env=clean_env)
    assert result.returncode == 2
    assert "config.project_missing" in result.stderr


def test_token_create_list_revoke_under_the_older_mcp_token_name(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    created = run_aifr(
        aifr_bin,
        "mcp",
        "token",
        "create",
        "--principal",
        "bot",
        "--role",
        "agent",
        "--operator",
        "alice",
        "-p",
        str(project),
        cwd=project,
        env=clean_env,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("aifr_")
    assert token not in (project / ".aifr" / "aifr.db").read_bytes().decode("latin-1")
    listed = run_aifr(
        aifr_bin, "mcp", "token", "list", "-p", str(project), cwd=project, env=clean_env
    )
    assert "bot" in listed.stdout
    assert "roles=agent" in listed.stdout
    digest = listed.stdout.split()[0]
    revoked = run_aifr(
        aifr_bin, "mcp", "token", "revoke", digest, "-p", str(project), cwd=project, env=clean_env
    )
    assert revoked.returncode == 0, revoked.stderr
    listed = run_aifr(
        aifr_bin, "mcp", "token", "list", "-p", str(project), cwd=project, env=clean_env
    )
    assert "no tokens" in listed.stdout
    exported = run_aifr(aifr_bin, "audit", "export", "-p", str(project), cwd=project, env=clean_env)
    assert exported.returncode == 0, exported.stderr
    assert token not in exported.stdout
    changes = [
        (r["kind"], r["details"]["action"], r["details"]["digest_prefix"], r["details"]["acts_as"])
        for r in map(json.loads, exported.stdout.splitlines())
    ]
    assert changes == [
        ("config.changed", "created", digest, "bot"),
        ("config.changed", "revoked", digest, "bot"),
    ]


def test_uds_refuses_to_replace_a_regular_file(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    precious = project / "not-a-socket"
    precious.write_text("keep me")
    result = run_aifr(
        aifr_bin,
        "mcp",
        "--transport",
        "uds",
        "--socket",
        str(precious),
        "-p",
        str(project),
        cwd=project,
        env=clean_env,
    )
    assert result.returncode == 1
    assert "transport.failed" in result.stderr
    assert "not a socket" in result.stderr
    assert precious.read_text() == "keep me"


def test_uds_server_creates_a_private_socket_and_removes_it_on_sigterm(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    socket_path = short_dir / "mcp.sock"
    server = ServerProcess(
        [aifr_bin, "mcp", "--transport", "uds", "--socket", str(socket_path), "-p", str(project)],
        project,
        clean_env,
    )
    try:
        server.wait_for("serving on unix:")
        assert stat.S_ISSOCK(socket_path.lstat().st_mode)
        assert stat.S_IMODE(socket_path.lstat().st_mode) == 0o600
    finally:
        server.stop()
    assert server.process.returncode == 0, server.stderr
    assert not socket_path.exists()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--port", "8765"], "--port"),
        (["--transport", "uds", "--host", "127.0.0.1"], "--host"),
        (["--transport", "http", "--port", "0", "--socket", "mcp.sock"], "--socket"),
    ],
)
def test_an_option_of_another_transport_is_refused_not_ignored(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], options: list[str], named: str
) -> None:
    # `aifr mcp --port 8765` served stdio and sat on the terminal; the port never opened.
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    result = subprocess.run(
        [aifr_bin, "mcp", *options, "-p", str(project)],
        cwd=project,
        env=clean_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_uds_socket_path_too_long_names_the_limit(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    too_long = short_dir / ("s" * 120 + ".sock")
    result = run_aifr(
        aifr_bin,
        "mcp",
        "--transport",
        "uds",
        "--socket",
        str(too_long),
        "-p",
        str(project),
        cwd=project,
        env=clean_env,
    )
    assert result.returncode == 1
    assert "transport.failed" in result.stderr
    # Python's OSError has no strerror here; the message ended in ": None".
    assert "bytes" in result.stderr and "None" not in result.stderr


def test_token_revoke_of_an_unknown_prefix_points_at_token_list(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    token = run_aifr(
        aifr_bin,
        "mcp",
        "token",
        "create",
        "--principal",
        "bot",
        "-p",
        str(project),
        cwd=project,
        env=clean_env,
    ).stdout.strip()
    # A user passing the token itself was told to "give a longer digest prefix".
    result = run_aifr(
        aifr_bin, "mcp", "token", "revoke", token, "-p", str(project), cwd=project, env=clean_env
    )
    assert result.returncode == 2
    assert "config.invalid" in result.stderr
    assert "longer" not in result.stderr
    assert "tokens list" in " ".join(result.stderr.split())
    assert token not in result.stderr  # a pasted token is not echoed back
