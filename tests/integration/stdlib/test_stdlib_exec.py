"""sys.exec and sys.env.read with real subprocesses."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, ExecutionError, ExecutionTimeoutError, SandboxRefusalError
from aifr.invocation.sandbox import Sandbox, SandboxLimits
from stdlib_kit import Lib, build_lib, run_in


@pytest.fixture
def lib(tmp_path: Path) -> Lib:
    return build_lib(
        tmp_path / "p",
        exec_allow_commands=["echo", "env", "pwd", "cat", sys.executable],
        exec_timeout_s=5,
        environ={
            "HOME": "/root",
            "API_TOKEN": "t-0123456789",
            "DATABASE_URL": "postgres://app:hunter2@db:5432/x",
        },
    )


def test_an_allowlisted_command_runs_with_argv_and_no_shell(lib: Lib) -> None:
    out = lib.call("sys.exec", {"argv": ["echo", "$HOME", "; rm -rf /", "`id`"]})
    assert out["exit_code"] == 0
    assert out["stdout"] == "$HOME ; rm -rf / `id`\n"
    assert out["signal"] is None


def test_the_environment_is_scrubbed_to_a_safe_base(
    lib: Lib, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFR_LEAK_CANARY", "must-not-leak")
    out = lib.call("sys.exec", {"argv": ["env"], "env": {"GREETING": "hi"}})
    names = {line.split("=", 1)[0] for line in out["stdout"].splitlines()}
    assert names == {"PATH", "LANG", "LC_ALL", "GREETING"}
    assert "must-not-leak" not in out["stdout"]


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "PATH", "PYTHONWARNINGS", "GIT_CONFIG_COUNT",
        "GIT_CONFIG_KEY_0", "GCONV_PATH", "JAVA_TOOL_OPTIONS", "HOME", "XDG_CONFIG_HOME",
        "GLIBC_TUNABLES", "GIT_DIR", "PERL5DB", "NPM_CONFIG_PREFIX", "git_pager",
    ],
)  # fmt: skip
def test_loader_variables_are_refused(lib: Lib, name: str) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("sys.exec", {"argv": ["env"], "env": {name: "/tmp/evil.so"}})
    assert caught.value.rule == "env_not_allowed"


def test_ordinary_variables_still_pass(lib: Lib) -> None:
    env = {"GIT_AUTHOR_NAME": "agent", "TZ": "UTC", "NO_COLOR": "1"}
    out = lib.call("sys.exec", {"argv": ["env"], "env": env})
    assert {"GIT_AUTHOR_NAME=agent", "TZ=UTC", "NO_COLOR=1"} <= set(out["stdout"].splitlines())


def test_the_working_folder_is_inside_the_roots(lib: Lib) -> None:
    (lib.root / "sub").mkdir()
    out = lib.call("sys.exec", {"argv": ["pwd"], "cwd": "sub"})
    assert out["stdout"].strip() == str((lib.root / "sub").resolve())


def test_stdin_is_fed_to_the_command(lib: Lib) -> None:
    out = lib.call("sys.exec", {"argv": ["cat"], "stdin": "line one\nline two\n"})
    assert out["stdout"] == "line one\nline two\n"


def test_commands_outside_the_allowlist_are_refused(lib: Lib) -> None:
    for argv in (["rm", "-rf", "x"], ["./echo"], ["/bin/sh", "-c", "id"], ["bin/echo"], []):
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call("sys.exec", {"argv": argv})
        assert caught.value.rule == "command_not_allowed", argv


def test_a_command_past_its_timeout_is_killed(lib: Lib) -> None:
    with pytest.raises(ExecutionTimeoutError) as caught:
        lib.call(
            "sys.exec",
            {"argv": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout_s": 0.5},
        )
    assert caught.value.code is ErrorCode.EXECUTION_TIMEOUT


def test_a_failing_command_reports_its_exit_code_and_stderr(lib: Lib) -> None:
    out = lib.call(
        "sys.exec",
        {"argv": [sys.executable, "-c", "import sys; sys.stderr.write('bad'); sys.exit(3)"]},
    )
    assert (out["exit_code"], out["stderr"]) == (3, "bad")


def test_env_read_masks_secret_looking_values(lib: Lib) -> None:
    out = lib.call("sys.env.read", {})
    assert out["variables"]["HOME"] == "/root"
    assert out["variables"]["API_TOKEN"] == "****"
    assert out["variables"]["DATABASE_URL"] == "postgres://app:***@db:5432/x"
    assert sorted(out["masked"]) == ["API_TOKEN", "DATABASE_URL"]


def test_env_read_selects_by_name_and_prefix(lib: Lib) -> None:
    assert lib.call("sys.env.read", {"names": ["HOME", "MISSING"]})["variables"] == {
        "HOME": "/root"
    }
    assert list(lib.call("sys.env.read", {"prefix": "DATA"})["variables"]) == ["DATABASE_URL"]


def _append_line(lib: Lib, key: str | None) -> dict[str, object]:
    script = "open('log.txt', 'a').write('ran\\n')"
    return lib.call("sys.exec", {"argv": [sys.executable, "-c", script]}, key=key)


def test_a_repeated_key_returns_the_first_result_without_running_again(lib: Lib) -> None:
    first = _append_line(lib, "run-1")
    second = _append_line(lib, "run-1")
    assert second == first
    assert (lib.root / "log.txt").read_text() == "ran\n"
    _append_line(lib, None)
    assert (lib.root / "log.txt").read_text() == "ran\nran\n"


def test_a_key_whose_run_was_cut_short_is_not_run_twice(lib: Lib) -> None:
    _append_line(lib, "run-1")
    (record,) = (lib.state / "calls").glob("*.json")
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "state": "started", "result": None}))
    with pytest.raises(ExecutionError) as caught:
        _append_line(lib, "run-1")
    assert caught.value.code is ErrorCode.EXECUTION_IN_PROGRESS
    assert (lib.root / "log.txt").read_text() == "ran\n"


def test_a_failed_run_releases_its_key(lib: Lib) -> None:
    with pytest.raises(SandboxRefusalError):
        lib.call("sys.exec", {"argv": ["rm", "x"]}, key="run-2")
    assert list((lib.state / "calls").glob("*.json")) == []


def test_without_a_cgroup_the_process_count_falls_back_to_rlimit(tmp_path: Path) -> None:
    sandbox = Sandbox(allow_commands=["echo"], cgroups=False)
    done = run_in(sandbox, ["echo", "ok"], tmp_path)
    assert (done.stdout, done.returncode) == (b"ok\n", 0)
    assert done.process_limit == ("none" if os.geteuid() == 0 else "rlimit")  # root is exempt


_FORK_UNTIL_REFUSED = """
import os
count = 0
while count < 64:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.pause()  # held until the sandbox kills the whole group
    count += 1
print(count)
"""


def test_a_command_cannot_start_more_processes_than_its_limit(tmp_path: Path) -> None:
    sandbox = Sandbox(allow_commands=[sys.executable], limits=SandboxLimits(processes=8))
    done = run_in(sandbox, [sys.executable, "-c", _FORK_UNTIL_REFUSED], tmp_path)
    if done.process_limit == "none":
        pytest.skip("root without a writable pids cgroup: no process limit can bind here")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 8


def test_a_writable_pids_cgroup_is_used_and_removed_afterwards(tmp_path: Path) -> None:
    base = Path("/sys/fs/cgroup/pids")
    before = {p.name for p in base.glob("aifr-sandbox-*")} if base.is_dir() else set()
    sandbox = Sandbox(allow_commands=["echo"], cgroups=None)
    done = run_in(sandbox, ["echo", "ok"], tmp_path)
    expected = "cgroup" if os.access(base, os.W_OK) else "rlimit"
    assert done.process_limit == expected
    deadline = time.monotonic() + 15  # another worker's sandbox may be running meanwhile
    while {p.name for p in base.glob("aifr-sandbox-*")} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {p.name for p in base.glob("aifr-sandbox-*")} - before


def test_a_command_that_cannot_start_is_an_execution_error(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    sandbox = Sandbox(allow_commands=[str(script)])
    with pytest.raises(ExecutionError) as caught:
        run_in(sandbox, [str(script)], tmp_path)
    assert caught.value.code is ErrorCode.EXECUTION_FAILED


def test_an_argument_holding_nul_is_refused_before_anything_starts(lib: Lib) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("sys.exec", {"argv": ["echo", "a\u0000b"]})
    assert caught.value.rule == "invalid_argument"
    assert caught.value.details["index"] == 1
