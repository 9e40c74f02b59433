"""``build_stdlib``: every standard capability, built from plain configuration values."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aifr.capabilities import Capability
from aifr.invocation.sandbox import SAFE_PATH, Sandbox, SandboxLimits, SandboxRules
from aifr.invocation.sandbox_backends import SandboxMode
from aifr.stdlib.calls import CallRecords
from aifr.stdlib.confine import Confinement
from aifr.stdlib.data import build_data_capabilities
from aifr.stdlib.findings import FindingsStores, build_findings_capabilities
from aifr.stdlib.fs import build_fs_capabilities
from aifr.stdlib.journal import FsJournal
from aifr.stdlib.net import build_net_capabilities
from aifr.stdlib.net_guard import NetGuard
from aifr.stdlib.permissions import PermissionTable
from aifr.stdlib.resources import build_resource_capabilities
from aifr.stdlib.scanners import ScannerConfinement, build_scanner_capabilities
from aifr.stdlib.system import build_system_capabilities

__all__ = ["build_stdlib"]

_MIB = 1024 * 1024


def build_stdlib(
    *,
    project_dir: Path,
    state_dir: Path,
    fs_roots: Sequence[Path | str] = (".",),
    max_read_bytes: int = 10 * _MIB,
    max_write_bytes: int = 10 * _MIB,
    net_allow_hosts: Sequence[str] = (),
    net_allow_schemes: Sequence[str] = ("https",),
    net_allow_private: bool = False,
    net_timeout_s: float = 10.0,
    net_max_response_bytes: int = 5 * _MIB,
    exec_allow_commands: Sequence[str] = (),
    exec_timeout_s: float = 30.0,
    exec_max_memory_mb: int = 512,
    exec_max_output_bytes: int = _MIB,
    exec_sandbox: SandboxMode = "auto",
    exec_read_paths: Sequence[Path] = (),
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    reserved: Sequence[Path] = (),
    permissions: PermissionTable | None = None,
    findings_stores: Callable[[], FindingsStores] | None = None,
) -> list[Capability]:
    """The ``io.fs.*``, ``io.net.*``, ``data.*`` and ``sys.*`` capabilities.

    Relative ``fs_roots`` are taken below ``project_dir``; ``state_dir`` (``.aifr``)
    holds the file journal and is refused to ``io.fs.*`` even inside a root, as are
    the ``reserved`` paths (the composition root passes the project's configuration
    file and policy folder, so an agent cannot rewrite what governs it).
    ``permissions`` narrows some principals (plugins) further: every path, host and
    command is checked against it as well.
    ``environ`` is what ``sys.env.read`` reads (the composition root passes
    ``os.environ``); nothing here reads process state on its own. ``exec_sandbox``
    picks the process sandbox for ``sys.exec``; it confines commands to the roots
    (reserved paths and ``home``'s credential folders hidden) plus ``exec_read_paths``.

    ``findings_stores`` opens the findings store and resource registry on first call;
    without it the ``findings.*`` and ``scan.*`` capabilities are left out. Scanner
    binaries are looked up on ``environ``'s ``PATH``, run under ``exec_sandbox`` and write
    only under ``state_dir/scans``.

    Nothing touches the disk or network until a capability is called.
    """
    roots = [Path(r) if Path(r).is_absolute() else project_dir / r for r in fs_roots]
    confinement = Confinement(roots, reserved=[state_dir, *reserved], permissions=permissions)
    journal = FsJournal(state_dir, confinement)
    records = CallRecords(state_dir / "calls")
    guard = NetGuard(
        allow_hosts=net_allow_hosts,
        allow_schemes=net_allow_schemes,
        allow_private=net_allow_private,
        permissions=permissions,
    )
    sandbox = Sandbox(
        allow_commands=exec_allow_commands,
        limits=SandboxLimits(
            timeout_s=exec_timeout_s,
            memory_bytes=exec_max_memory_mb * _MIB,
            output_bytes=exec_max_output_bytes,
        ),
        mode=exec_sandbox,
        rules=SandboxRules.build(
            roots, reserved=[state_dir, *reserved], home=home, extra_read=exec_read_paths
        ),
        egress=guard.vet_host,
    )
    findings = (
        [
            *build_findings_capabilities(
                findings_stores, confinement=confinement, uploads_dir=state_dir / "uploads"
            ),
            *build_resource_capabilities(findings_stores),
            *build_scanner_capabilities(
                open_stores=findings_stores,
                search_path=(environ or {}).get("PATH", SAFE_PATH),
                scans_dir=state_dir / "scans",
                confinement=ScannerConfinement(
                    mode=exec_sandbox, reserved=reserved, home=home, extra_read=exec_read_paths
                ),
            ),
        ]
        if findings_stores
        else []
    )
    return [
        *findings,
        *build_fs_capabilities(
            confinement=confinement,
            journal=journal,
            max_read_bytes=max_read_bytes,
            max_write_bytes=max_write_bytes,
        ),
        *build_net_capabilities(
            records=records,
            allow_hosts=net_allow_hosts,
            allow_schemes=net_allow_schemes,
            allow_private=net_allow_private,
            timeout_s=net_timeout_s,
            max_response_bytes=net_max_response_bytes,
            permissions=permissions,
        ),
        *build_data_capabilities(max_input_bytes=max_read_bytes),
        *build_system_capabilities(
            confinement=confinement, sandbox=sandbox, records=records, environ=environ or {}
        ),
    ]
