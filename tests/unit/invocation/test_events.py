"""Lifecycle events: subscription, filtering, isolation of broken observers."""

from __future__ import annotations

import logging

import pytest

from aifr.invocation import EventBus, LifecycleEvent


def test_observers_get_events_of_their_kinds_until_they_unsubscribe() -> None:
    bus = EventBus()
    everything: list[str] = []
    finished: list[str] = []
    bus.subscribe(lambda e: everything.append(e.kind))
    stop = bus.subscribe(lambda e: finished.append(e.request_id), kinds=["invocation.finished"])
    bus.emit(LifecycleEvent("invocation.started", "r1", "x"))
    bus.emit(LifecycleEvent("invocation.finished", "r1", "x"))
    stop()
    bus.emit(LifecycleEvent("invocation.finished", "r2", "x"))
    assert everything == ["invocation.started", "invocation.finished", "invocation.finished"]
    assert finished == ["r1"]


def test_a_broken_observer_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: LifecycleEvent) -> None:
        raise RuntimeError("observer bug")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.kind))
    with caplog.at_level(logging.ERROR, logger="aifr"):
        bus.emit(LifecycleEvent("hook.failed", "r1", "x"))
    assert seen == ["hook.failed"]
    assert "observer" in caplog.text


def test_without_observers_the_bus_says_so() -> None:
    bus = EventBus()
    assert not bus.has_observers
    bus.subscribe(print)
    assert bus.has_observers
