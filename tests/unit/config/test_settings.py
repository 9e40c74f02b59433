"""Settings: aifr.toml first, AIFR_* variables over it, clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.config import init_project, load_settings
from aifr.errors import ConfigError, ErrorCode


def test_defaults_apply_without_a_project_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.project_dir == tmp_path.resolve()
    assert settings.sqlite_path == tmp_path.resolve() / ".aifr" / "aifr.db"
    assert settings.fs.roots == ["."]


def test_file_values_are_read(tmp_path: Path) -> None:
    (tmp_path / "aifr.toml").write_text(
        'principal = "bob"\n[fs]\nroots = ["data", "/abs"]\n[net]\nallow_hosts = ["example.com"]\n'
    )
    settings = load_settings(tmp_path)
    assert settings.principal == "bob"
    assert settings.fs.roots == ["data", "/abs"]
    assert settings.path("data") == tmp_path.resolve() / "data"
    assert settings.path("/abs") == Path("/abs")


def test_environment_wins_over_the_file_and_keeps_other_file_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aifr.toml").write_text('[fs]\nroots = ["data"]\nmax_read_bytes = 100\n')
    monkeypatch.setenv("AIFR_FS__ROOTS", '["other"]')
    monkeypatch.setenv("AIFR_PRINCIPAL", "carol")
    settings = load_settings(tmp_path)
    assert settings.fs.roots == ["other"]
    assert settings.fs.max_read_bytes == 100
    assert settings.principal == "carol"


def test_bad_file_value_names_the_key_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "aifr.toml").write_text("[fs]\nmax_read_bytes = -5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert "fs.max_read_bytes" in caught.value.message
    assert "aifr.toml" in caught.value.message


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFR_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "AIFR_LOG_LEVEL" in caught.value.message


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("AIFR_RUNTIME__DEFAULT_TIMEOUT_S", "abc", "runtime.default_timeout_s"),
        ("AIFR_MCP__PORT", "99999", "mcp.port"),
        ("AIFR_RUNTIME__BOGUS", "1", "runtime.bogus"),
        ("aifr_approvals__expiry_s", "-1", "approvals.expiry_s"),
        ("AIFR_FS", '{"roots": 3}', "fs.roots"),
    ],
)
def test_bad_nested_environment_value_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    (tmp_path / "aifr.toml").write_text("[runtime]\nstdlib = true\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert f"{key}: " in caught.value.message
    assert f"(from environment variable {variable.upper()})" in caught.value.message
    assert "(from " + str(tmp_path) not in caught.value.message


def test_a_bad_file_value_beside_a_good_variable_still_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aifr.toml").write_text("[runtime]\ndefault_timeout_s = -1\n")
    monkeypatch.setenv("AIFR_RUNTIME__STDLIB", "false")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "runtime.default_timeout_s" in caught.value.message
    assert f"(from {tmp_path.resolve() / 'aifr.toml'})" in caught.value.message


def test_a_list_variable_that_is_not_json_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFR_MCP__PRINCIPAL", "plain-text-is-fine-here")
    monkeypatch.setenv("AIFR_MCP__ROLES", "[admin")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert caught.value.details["variables"] == ["AIFR_MCP__ROLES"]
    assert "AIFR_MCP__ROLES is not valid JSON" in caught.value.message


def test_unknown_keys_are_refused_naming_the_key_meant(tmp_path: Path) -> None:
    (tmp_path / "aifr.toml").write_text("[fs]\nrootz = []\n[runtme]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "fs.rootz: unknown setting (did you mean 'roots'?)" in caught.value.message
    assert "runtme: unknown setting (did you mean 'runtime'?)" in caught.value.message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('principal = " local-user"\n', "principal"),
        ('[mcp]\nprincipal = ""\n', "mcp.principal"),
        ('[mcp]\noperator = "ali\\nce"\n', "mcp.operator"),
        ('[mcp.uid_principals]\n1000 = "\\tbob"\n', "mcp.uid_principals.1000"),
    ],
)
def test_a_configured_principal_that_is_no_name_stops_start_up(
    tmp_path: Path, toml: str, key: str
) -> None:
    (tmp_path / "aifr.toml").write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert f"{key}: " in caught.value.message
    assert "a principal is a printable name" in caught.value.message


def test_malformed_toml_is_a_config_error_with_the_position(tmp_path: Path) -> None:
    (tmp_path / "aifr.toml").write_text("principal = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "line 1" in caught.value.message


def test_requiring_a_project_without_one_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, require_project=True)
    assert caught.value.code is ErrorCode.CONFIG_PROJECT_MISSING
    assert "aifr init" in caught.value.message


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        settings.principal = "mallory"  # type: ignore[misc]  # the mutation under test


def test_init_creates_the_layout_and_never_overwrites(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    created = init_project(project)
    assert {p.relative_to(project).as_posix() for p in created} >= {
        "aifr.toml",
        "policies",
        "workflows",
        ".aifr",
        "policies/default.yaml",
    }
    assert (project / ".aifr").stat().st_mode & 0o777 == 0o700
    (project / "aifr.toml").write_text('principal = "kept"\n')
    assert init_project(project) == []
    assert load_settings(project).principal == "kept"


def test_init_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError):
        init_project(blocker)


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("AIFR_AUDT__SYNCHRONOUS", "AIFR_AUDIT__SYNCHRONOUS"),
        ("AIFR_POLCY__DIRECTORY", "AIFR_POLICY__DIRECTORY"),
        ("AIFR_WORKFLOW", "AIFR_WORKFLOWS"),
        ("aifr_secret__providers", "AIFR_SECRETS__PROVIDERS"),
    ],
)
def test_a_mistyped_setting_variable_is_refused_with_the_name_it_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, meant: str
) -> None:
    monkeypatch.setenv(variable, "FULL")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert variable in caught.value.message
    assert f"did you mean {meant}?" in caught.value.message


def test_other_tools_aifr_variables_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("AIFR_TEST_PG_DSN", "AIFR_MCP_TOKEN", "AIFR_BENCH_WF_RUNS"):
        monkeypatch.setenv(variable, "x")
    assert load_settings(tmp_path).audit.synchronous == "FULL"
