"""``sys.exec`` (run an allowlisted command in the sandbox) and ``sys.env.read``.

``sys.exec`` is EXECUTE and HIGH: the command's own effects are not known to aifr, so
every call goes through the policy's HIGH-risk rules (approval by default). What aifr
does guarantee is the container around it: argv only, allowlist, confined working
directory, scrubbed environment and resource limits (see ``aifr.invocation.sandbox``).
``sys.env.read`` reads the runtime's environment with secret-looking values masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import cast

from pydantic import JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import CallInfo, Capability, Compensation, capability
from aifr.errors import AifrError, ErrorCode, ExecutionError, SandboxRefusalError
from aifr.invocation.sandbox import Sandbox
from aifr.redaction import detect, is_secret_key, redact_url
from aifr.stdlib.calls import CallRecords
from aifr.stdlib.confine import Confinement
from aifr.stdlib.limits import Seconds

__all__ = ["MASK", "build_system_capabilities", "is_secret_like", "mask_value"]

MASK = "****"
_OPAQUE = re.compile(r"^[A-Za-z0-9+/=_\-]{32,}$")


class ExecOutput(TypedDict):
    """What ``sys.exec`` returns."""

    argv: list[str]
    exit_code: int
    signal: str | None
    stdout: str
    stderr: str
    duration_ms: float
    process_limit: str


class Environment(TypedDict):
    """What ``sys.env.read`` returns; ``masked`` names the variables whose value is hidden."""

    variables: dict[str, str]
    masked: list[str]


def _looks_random(value: str) -> bool:
    """A long token mixing letters and digits (an API key more than a word or a path)."""
    return (
        bool(_OPAQUE.match(value))
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def is_secret_like(name: str, value: str) -> bool:
    """Whether a variable looks like it holds a credential, by name or by value.

    Names are judged by the project's one secret-name rule, values by its detector
    (JWTs, PEM keys, cloud and SaaS tokens, high-entropy strings) plus long opaque
    strings mixing letters and digits, which in an environment variable are keys more
    often than not.
    """
    return bool(is_secret_key(name) or detect(value) or _looks_random(value))


def mask_value(name: str, value: str) -> str:
    """``value`` with secrets hidden; a URL keeps what is not a credential.

    A URL loses its password and credential query values by the project's one URL rule
    (``postgres://app:***@db/x``, ``?sig=***``); other secret-looking values become
    ``****``. A URL whose variable name itself says secret (``SLACK_WEBHOOK_URL``) is
    hidden whole: the address is the credential.
    """
    if "://" in value and not is_secret_key(name):
        shown = redact_url(value)
        if shown != value:
            return shown
    return MASK if is_secret_like(name, value) else value


def build_system_capabilities(
    *,
    confinement: Confinement,
    sandbox: Sandbox,
    records: CallRecords,
    environ: Mapping[str, str],
) -> list[Capability]:
    """``sys.exec`` over ``sandbox`` with working folders inside ``confinement``, and ``sys.env.read``."""

    @capability(
        "sys.exec",
        operation="EXECUTE",
        risk="HIGH",
        reversible=False,
        compensation=Compensation(supported=True, strategy="declared_by_caller"),
        side_effect_scope="process",
        side_effect_description=(
            "runs an allowlisted command (no shell) in a folder inside the roots, under "
            "CPU, memory, file-size, process-count, time and output limits"
        ),
        tags=("stdlib", "sys"),
        timeout_s=sandbox.limits.timeout_s + 5,
        justification=(
            "a command's effects are unknown to aifr and cannot be undone by it; only a "
            "compensation the caller (a workflow step) declares can; HIGH sends it to policy"
        ),
    )
    def exec_command(
        argv: list[str],
        call: CallInfo,
        cwd: str = ".",
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: Seconds | None = None,
    ) -> ExecOutput:
        """Run an allowlisted command with an argv list (never a shell) inside the sandbox.

        Args:
            argv: The command and its arguments; the command must be allowlisted.
            cwd: Working folder, inside the configured roots.
            stdin: Text fed to the command's standard input.
            env: Extra environment variables (loader and interpreter variables are refused).
            timeout_s: Seconds before the command is killed (at most the configured limit).
            call: Filled by the runtime; a repeated idempotency key returns the first result.
        """
        inputs: dict[str, JsonValue] = {
            "argv": list(argv), "cwd": cwd, "stdin": stdin, "env": dict(env or {}), "timeout_s": timeout_s,
        }  # fmt: skip
        earlier = records.begin("sys.exec", call, inputs)
        if earlier is not None:
            if earlier.result is not None:
                return cast(ExecOutput, earlier.result)
            raise ExecutionError(
                f"a command with idempotency key {call.idempotency_key!r} started before and "
                "its outcome is unknown (the process stopped mid-run); it is not run twice, "
                "use a new key to run it again",
                code=ErrorCode.EXECUTION_IN_PROGRESS,
                idempotency_key=call.idempotency_key,
            )
        try:
            output = _run(argv, cwd, stdin, env or {}, timeout_s)
        except AifrError:
            records.forget("sys.exec", call)
            raise
        records.finish("sys.exec", call, cast(dict[str, JsonValue], output))
        return output

    def _run(
        argv: list[str], cwd: str, stdin: str | None, env: dict[str, str], timeout_s: float | None
    ) -> ExecOutput:
        sandbox.resolve(argv[0] if argv else "")
        for index, argument in enumerate(argv):
            if "\0" in argument:  # exec cannot pass it; Popen would fail with a bare ValueError
                raise SandboxRefusalError(
                    f"argv[{index}] holds a NUL byte, which no command can receive",
                    rule="invalid_argument",
                    index=index,
                )
        target = confinement.locate(cwd)
        with confinement.directory(target.root, target.parts, raw=cwd) as fd:
            done = sandbox.run(
                argv,
                cwd_fd=fd,
                stdin=stdin.encode() if stdin is not None else None,
                env=env,
                timeout_s=timeout_s,
            )
        return ExecOutput(
            argv=list(done.argv),
            exit_code=done.returncode,
            signal=done.signal_name,
            stdout=done.stdout.decode("utf-8", "replace"),
            stderr=done.stderr.decode("utf-8", "replace"),
            duration_ms=round(done.duration_s * 1000, 3),
            process_limit=done.process_limit,
        )

    @capability(
        "sys.env.read",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "sys"),
        justification="reads environment variables with secret-looking values masked",
    )
    def read_env(names: list[str] | None = None, prefix: str | None = None) -> Environment:
        """Read the runtime's environment variables, masking secret-looking values.

        Args:
            names: Only these variables (missing ones are left out).
            prefix: Only variables whose name starts with this.
        """
        selected = {
            name: value
            for name, value in environ.items()
            if (names is None or name in names) and (prefix is None or name.startswith(prefix))
        }
        shown = {name: mask_value(name, value) for name, value in sorted(selected.items())}
        return Environment(
            variables=shown,
            masked=[name for name, value in shown.items() if value != selected[name]],
        )

    return [exec_command, read_env]
