"""``workflows.overlap_commits = "auto"``: the decision, its refresh and its failures."""

from __future__ import annotations

import logging
import socket

import pytest

from aifr.errors import StorageError, UnconfirmedCommitError
from aifr.storage.postgres.database import is_local_server
from aifr.workflows.overlap import CommitOverlap


class _Registry:
    """How many workers this host has, counted each time the policy asks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.reads = 0
        self.error: Exception | None = None

    def __call__(self) -> int:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.workers


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _policy(
    registry: _Registry, clock: _Clock, *, cpus: int = 2, local: bool = True
) -> CommitOverlap:
    return CommitOverlap(registry, cpus=cpus, server_local=local, refresh_s=1.0, clock=clock)


@pytest.mark.parametrize(
    ("workers", "cpus", "overlap"),
    [
        (0, 2, True),  # a process that is no worker (aifr run) drives runs as one
        (1, 2, True),  # one worker and the server: a core each
        (2, 2, False),  # two workers and the server on two cores
        (4, 2, False),
        (1, 1, False),  # one core: the worker and the server take turns anyway
        (3, 4, True),
        (4, 4, False),
    ],
)
def test_a_local_server_is_overlapped_only_while_the_host_s_workers_and_it_fit_its_cores(
    workers: int, cpus: int, overlap: bool
) -> None:
    assert _policy(_Registry(workers), _Clock(), cpus=cpus)() is overlap


def test_a_server_elsewhere_is_always_overlapped_and_the_registry_never_read() -> None:
    registry = _Registry(8)

    assert _policy(registry, _Clock(), local=False)() is True
    assert registry.reads == 0


def test_the_count_is_read_at_most_once_a_refresh_and_a_change_is_seen_after_it() -> None:
    registry, clock = _Registry(1), _Clock()
    policy = _policy(registry, clock)

    assert policy() is True
    registry.workers = 2  # a second worker started on this host
    clock.now += 0.5
    assert policy() is True and registry.reads == 1  # not read again yet
    clock.now += 0.6
    assert policy() is False and registry.reads == 2
    registry.workers = 1  # it stopped
    clock.now += 1.0
    assert policy() is True and registry.reads == 3


def test_a_failed_read_keeps_the_last_decision_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, clock = _Registry(2), _Clock()
    policy = _policy(registry, clock)
    assert policy() is False
    registry.error = StorageError("counting workers failed: the server is away")
    clock.now += 2.0

    with caplog.at_level(logging.WARNING, logger="aifr.workflows.overlap"):
        assert policy() is False

    assert "counting this host's workers failed" in caplog.text
    assert "the server is away" in caplog.text


def test_a_refused_pending_commit_met_while_counting_is_raised_not_swallowed() -> None:
    # Read inside a drive's deferred commits, the count settles the thread's pending
    # commit first; a refusal of that commit is the drive's to handle.
    registry, clock = _Registry(1), _Clock()
    registry.error = UnconfirmedCommitError("completing a step: the commit was not confirmed")

    with pytest.raises(UnconfirmedCommitError):
        _policy(registry, clock)()


@pytest.mark.parametrize(
    ("dsn", "local"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", True),
        ("postgresql://localhost/app", True),
        ("postgresql://[::1]:5432/app", True),
        ("postgresql:///app?host=/var/run/postgresql", True),
        ("host=127.0.0.2 dbname=app", True),
        ("postgresql://db.example.com/app", False),
        ("postgresql://10.1.2.3/app", False),
        ("host=127.0.0.1,db.example.com dbname=app", False),  # libpq may reach either
        ("postgresql://db.example.com/app?hostaddr=127.0.0.1", True),  # hostaddr is dialled
        (f"postgresql://{socket.gethostname()}/app", True),
        ("postgresql://%zz", False),  # not a DSN libpq parses: refused elsewhere
    ],
)
def test_a_server_is_local_when_every_host_the_dsn_names_is_this_one(
    dsn: str, local: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    assert is_local_server(dsn) is local


def test_a_dsn_without_a_host_is_local_unless_pghost_names_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    assert is_local_server("dbname=app")  # libpq's default: a Unix socket
    monkeypatch.setenv("PGHOST", "db.example.com")
    assert not is_local_server("dbname=app")
