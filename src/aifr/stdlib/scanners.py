"""``scan.nuclei``, ``scan.feroxbuster``, ``scan.katana``: run a scanner on registered targets.

Each runs the tool's binary, found on the runtime's ``PATH``, through the one process
sandbox (argv only, scrubbed environment, limits, every child killed at the end) under
the configured backend (``[exec] sandbox``): it writes only under ``.aifr/scans/``
(its JSON output and its ``HOME``), reads only that folder, the system folders and its
own binary, and reaches the network only through the egress proxy, which lets it
connect to the hosts (and ports) of the call's targets and nothing else. Then the output
file is imported into the project like ``aifr findings import``. They are EXECUTE, HIGH and irreversible (a probe
sent cannot be taken back), so the policy must allow them explicitly; and every target
must fall under a resource registered for the project (``aifr resources add``), so an
agent cannot point a scanner at a host nobody chose. Without the binary they fail with
``findings.scanner_missing`` and say how to import a file instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, JsonValue

from aifr.capabilities import Capability, Compensation, capability
from aifr.errors import ErrorCode, ExecutionError, FindingsError, SandboxRefusalError
from aifr.findings.importer import import_findings, new_run_id
from aifr.findings.resources import match_resource, target_of_url
from aifr.invocation.egress_proxy import HostCheck
from aifr.invocation.sandbox import Sandbox, SandboxLimits, SandboxRules
from aifr.invocation.sandbox_backends import SandboxMode
from aifr.stdlib.findings import FindingsStores
from aifr.stdlib.limits import Seconds
from aifr.stdlib.net_guard import NetGuard

__all__ = ["ScannerConfinement", "ScannerLimits", "build_scanner_capabilities"]

Targets = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=2048)]], Field(min_length=1, max_length=256)
]
# A run id names the output file under .aifr/scans: no "/" and no leading ".", so an
# agent cannot point the scanner's -o outside that folder (the Ident pattern of the models).
RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScannerLimits:
    """Limits of one scanner run: Go scanners reserve much address space and many threads."""

    timeout_s: float = 1800.0
    memory_bytes: int = 4096 * _MIB
    output_file_bytes: int = 1024 * _MIB
    stdout_bytes: int = 64 * _MIB
    processes: int = 512


@dataclass(frozen=True, slots=True)
class ScannerConfinement:
    """How scanners are confined: the backend and what stays hidden even from reads.

    ``reserved`` (the project's configuration and policies) and ``home``'s credential
    folders are hidden; ``extra_read`` adds read-only folders (``[exec] read_paths``).
    """

    mode: SandboxMode = "none"
    reserved: Sequence[Path] = ()
    home: Path | None = None
    extra_read: Sequence[Path] = ()


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    flags: tuple[str, ...]
    targets_on_stdin: bool


_TOOLS = (
    _Tool("nuclei", ("-jsonl", "-silent", "-no-color"), targets_on_stdin=False),
    _Tool("feroxbuster", ("--json", "--silent", "--no-state"), targets_on_stdin=True),
    _Tool("katana", ("-jsonl", "-silent", "-no-color"), targets_on_stdin=False),
)


def _argv(tool: _Tool, binary: str, output: str, targets: list[str]) -> list[str]:
    argv = [binary, *tool.flags, "-o", output]
    if tool.targets_on_stdin:
        return [*argv, "--stdin"]
    for target in targets:
        argv += ["-u", target]
    return argv


def build_scanner_capabilities(
    *,
    open_stores: Callable[[], FindingsStores],
    search_path: str,
    scans_dir: Path,
    limits: ScannerLimits | None = None,
    confinement: ScannerConfinement | None = None,
) -> list[Capability]:
    """One capability per scanner; binaries are looked up on ``search_path`` at call time."""
    chosen = limits or ScannerLimits()
    confine = confinement or ScannerConfinement()
    return [_scanner(tool, open_stores, search_path, scans_dir, chosen, confine) for tool in _TOOLS]


def _endpoint(target: str) -> tuple[str, int | None] | None:
    """The host and port a target names; the port is ``None`` for a bare host (any port)."""
    text = target.strip()
    try:
        if "://" in text:
            parts = urlsplit(text)
            default = {"http": 80, "https": 443}.get(parts.scheme.lower())
            port = parts.port if parts.port is not None else default
        else:
            parts = urlsplit(f"//{text}")
            port = parts.port
    except ValueError:  # a port that is not a number
        return None
    host = (parts.hostname or "").rstrip(".")
    return (host, port) if host else None


def _egress(targets: list[str]) -> HostCheck:
    """The egress check of one scan: only the targets' hosts (and ports), never metadata.

    Private addresses are allowed (scanning an internal host is the point, and every
    target is a registered resource); the addresses a host resolves to are vetted by the
    same guard as ``io.net``, which refuses cloud metadata endpoints.
    """
    endpoints = {e for e in map(_endpoint, targets) if e is not None}
    guard = NetGuard(
        allow_hosts=sorted({host for host, _ in endpoints}),
        allow_schemes=("http", "https"),
        allow_private=True,
    )

    def check(scheme: str, host: str, port: int) -> tuple[str, ...]:
        name = host.lower().rstrip(".")
        if (name, port) not in endpoints and (name, None) not in endpoints:
            raise SandboxRefusalError(
                f"host {name}:{port} refused: not one of this scan's targets",
                rule="host_not_allowed",
                host=name,
                port=port,
            )
        return guard.vet_host(scheme, name, port)

    return check


def _rules(scans_dir: Path, binary: str, confine: ScannerConfinement) -> SandboxRules:
    """Reads and writes under ``scans_dir`` only, reads of the system folders and the binary."""
    return SandboxRules.build(
        [scans_dir],
        reserved=confine.reserved,
        home=confine.home,
        extra_read=[*confine.extra_read, Path(binary)],
    )


def _check_targets(stores: FindingsStores, project: str, targets: list[str]) -> None:
    _, registry = stores
    resources = list(registry.list_resources(project))
    for target in targets:
        if target.startswith("-"):
            raise FindingsError(
                f"target {target!r} starts with '-' and would be read as an option",
                code=ErrorCode.FINDINGS_TARGET_NOT_REGISTERED,
                target=target,
            )
        if match_resource(resources, target_of_url(target)) is None:
            raise FindingsError(
                f"target {target!r} is not a registered resource of project {project!r}; "
                f"register it first: aifr resources add {target} --project {project}",
                code=ErrorCode.FINDINGS_TARGET_NOT_REGISTERED,
                target=target,
                project_id=project,
            )


def _scanner(
    tool: _Tool,
    open_stores: Callable[[], FindingsStores],
    search_path: str,
    scans_dir: Path,
    limits: ScannerLimits,
    confine: ScannerConfinement,
) -> Capability:
    @capability(
        f"scan.{tool.name}",
        operation="EXECUTE",
        risk="HIGH",
        reversible=False,
        compensation=Compensation(supported=True, strategy="declared_by_caller"),
        side_effect_scope="network",
        side_effect_description=(
            f"runs {tool.name} against registered targets (network probes), then stores "
            "its findings in the project"
        ),
        tags=("stdlib", "scanners"),
        timeout_s=limits.timeout_s + 60,
        justification=(
            "sends probes to other hosts, which cannot be taken back; only an undo the "
            "caller (a workflow step) declares can follow it; HIGH sends it to policy"
        ),
    )
    def scan(
        project: str, targets: Targets, run: RunId | None = None, timeout_s: Seconds | None = None
    ) -> dict[str, JsonValue]:
        """Run the scanner on registered targets of a project and import what it finds.

        Args:
            project: The findings project whose registered resources the targets must be.
            targets: URLs or hosts to scan, each under a registered resource.
            run: Run id for the findings (default: a new one).
            timeout_s: Seconds before the scanner is stopped (at most the configured limit).
        """
        stores = open_stores()
        _check_targets(stores, project, targets)
        binary = shutil.which(tool.name, path=search_path)
        if binary is None:
            raise FindingsError(
                f"{tool.name} is not installed (not found on PATH); install it, or run it "
                f"yourself and import its output: aifr findings import FILE --scanner "
                f"{tool.name} --project {project}",
                code=ErrorCode.FINDINGS_SCANNER_MISSING,
                scanner=tool.name,
            )
        run_id = run or new_run_id()
        scans_dir.mkdir(parents=True, exist_ok=True)
        (scans_dir / "home").mkdir(exist_ok=True)
        output = f"{tool.name}-{run_id}.jsonl"
        sandbox = Sandbox(
            allow_commands=(binary,),
            limits=SandboxLimits(
                timeout_s=limits.timeout_s,
                memory_bytes=limits.memory_bytes,
                file_bytes=limits.output_file_bytes,
                output_bytes=limits.stdout_bytes,
                processes=limits.processes,
            ),
            base_env={"HOME": str(scans_dir / "home")},
            mode=confine.mode,
            rules=_rules(scans_dir, binary, confine),
            egress=_egress(targets),
        )
        folder = os.open(scans_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            done = sandbox.run(
                _argv(tool, binary, output, targets),
                cwd_fd=folder,
                stdin="\n".join(targets).encode() + b"\n" if tool.targets_on_stdin else None,
                timeout_s=timeout_s,
                network=True,
            )
        finally:
            os.close(folder)
        written = scans_dir / output
        if done.returncode != 0 or not written.exists():
            tail = done.stderr.decode("utf-8", "replace")[-2000:]
            raise ExecutionError(
                f"{tool.name} exited with status {done.returncode}"
                + ("" if written.exists() else " and wrote no output file")
                + (f": {tail.strip()}" if tail.strip() else ""),
                scanner=tool.name,
                exit_code=done.returncode,
            )
        store, registry = stores
        with written.open("rb") as stream:
            summary = import_findings(
                store,
                registry,
                stream,
                project_id=project,
                run_id=run_id,
                scanner=tool.name,
                source=str(written),
            )
        result: dict[str, JsonValue] = {
            **summary.to_json(),
            "output_file": str(written),
            "exit_code": done.returncode,
            "duration_s": round(done.duration_s, 3),
            "sandbox": done.sandbox,
            "connections": list(done.connections),
        }
        return result

    return scan
