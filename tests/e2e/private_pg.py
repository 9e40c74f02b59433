"""A private PostgreSQL cluster for a test that must restart its server.

The shared test server is never restarted (other tests use it): :func:`private_cluster`
runs ``initdb`` and ``pg_ctl`` as the ``postgres`` user (through ``runuser``; the test
runs as root) on a free port of 127.0.0.1, with its socket in its own folder, and
removes the cluster afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cluster:
    """A running private cluster: its folder, port and ``pg_ctl``."""

    root: Path
    port: int
    bin_dir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``pg_ctl ARGS`` on this cluster, as the ``postgres`` user."""
        return _as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), *args, timeout=timeout
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: connections are closed, the server comes back."""
        done = self.pg_ctl("restart", "-m", "fast", "-w", *self._options())
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {done.stdout}{done.stderr}")

    def _options(self) -> list[str]:
        return [
            "-l",
            str(self.root / "server.log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
        ]


def _as_postgres(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def cluster_unavailable() -> str | None:
    """``None`` when :func:`private_cluster` can work here, else why not."""
    if os.geteuid() != 0:
        return "starting a private PostgreSQL needs root (to run initdb as the postgres user)"
    if shutil.which("runuser") is None:
        return "runuser is not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "initdb is not installed (/usr/lib/postgresql/*/bin/initdb)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A fresh cluster (trust authentication on 127.0.0.1), stopped and removed after."""
    bin_dir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="aifr-pg-"))
    owner = pwd.getpwnam("postgres")
    os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(root, _free_port(), bin_dir)
    try:
        made = _as_postgres(
            str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stdout}{made.stderr}")
        started = cluster.pg_ctl("start", "-w", *cluster._options())
        if started.returncode != 0:
            log = root / "server.log"
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}{log.read_text()}")
        yield cluster
    finally:
        cluster.pg_ctl("stop", "-m", "immediate", timeout=60)
        shutil.rmtree(root, ignore_errors=True)
