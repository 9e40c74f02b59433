"""A worker whose turns keep failing on the database backs off: doubling, capped, jittered."""

from __future__ import annotations

from aifr.workflows.worker import MAX_BACKOFF_S, backoff_s


def test_the_pause_doubles_with_each_failure_in_a_row_within_its_jitter() -> None:
    for failures in range(1, 5):
        pause = backoff_s(0.5, failures)
        full = 0.5 * 2**failures
        assert full / 2 <= pause <= full


def test_the_pause_never_exceeds_the_cap_however_long_the_outage() -> None:
    assert all(backoff_s(0.5, failures) <= MAX_BACKOFF_S for failures in (10, 100, 10_000))
    assert backoff_s(0.5, 10_000) >= MAX_BACKOFF_S / 2
