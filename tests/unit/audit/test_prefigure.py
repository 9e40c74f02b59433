"""An event encoded before its duration is known comes out exactly as encoded afterwards."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aifr.audit import REDACTED, AuditEvent, AuditLedger
from aifr.audit.prefigure import known_prepared, prefigure
from audit_kit import json_values, optional_text

durations = st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**6)


def _prepared_afresh(event: AuditEvent) -> tuple[AuditEvent, str, str]:
    """What the ledger makes of an equal event it has never seen (no template behind it)."""
    twin = dataclasses.replace(event, details=dict(event.details))
    return AuditLedger._prepare(twin)


@given(
    kind=st.text(max_size=10).filter(bool),
    principal=st.text(max_size=10).filter(bool),
    fields=st.lists(optional_text, min_size=9, max_size=9),
    details=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    duration=durations,
)
def test_a_filled_template_is_exactly_the_event_encoded_afterwards(
    kind: str,
    principal: str,
    fields: list[str | None],
    details: dict,  # type: ignore[type-arg]
    duration: float,
) -> None:
    event = AuditEvent(kind, principal, *fields, details={**details, "duration_s": 0.5})
    template = prefigure(event, "duration_s")
    assert template is not None
    filled = template.filled(duration)
    fresh = _prepared_afresh(
        dataclasses.replace(event, details={**details, "duration_s": duration})
    )
    assert filled == fresh[0]
    assert AuditLedger._prepare(filled) == fresh


def test_secrets_are_redacted_in_the_template_as_in_the_record_built_afterwards() -> None:
    event = AuditEvent(
        "invocation",
        "alice",
        details={
            "api_key": "sk-live-abcdefghijklmnopqrstuvwx",
            "note": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 inside",
            "duration_s": 0.0,
        },
    )
    template = prefigure(event, "duration_s")
    assert template is not None
    filled = template.filled(0.25)
    event_json, details_json = AuditLedger._prepare(filled)[1:]
    assert "sk-live" not in event_json and "ghp_abcdef" not in event_json
    assert filled.details["api_key"] == REDACTED
    assert AuditLedger._prepare(filled) == _prepared_afresh(filled)
    assert '"duration_s":0.25' in details_json


def test_no_template_without_the_slot_or_where_redaction_would_take_it() -> None:
    assert prefigure(AuditEvent("invocation", "alice", details={"x": 1}), "duration_s") is None
    # a slot whose name reads as a secret's is redacted: it cannot be left open
    secret_named = AuditEvent("invocation", "alice", details={"password": 1})
    assert prefigure(secret_named, "password") is None


def test_only_the_very_event_filled_on_this_thread_is_served_from_its_template() -> None:
    event = AuditEvent("invocation", "alice", details={"duration_s": 0.0, "k": "v"})
    template = prefigure(event, "duration_s")
    assert template is not None
    filled = template.filled(1.5)
    assert known_prepared(filled) is not None
    assert known_prepared(dataclasses.replace(filled, details=dict(filled.details))) is None
    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(known_prepared(filled)))
    other.start()
    other.join()
    assert seen == [None]


def test_a_template_fills_many_times_each_its_own_event() -> None:
    event = AuditEvent("invocation", "alice", details={"duration_s": 0.0})
    template = prefigure(event, "duration_s")
    assert template is not None
    first, second = template.filled(1.0), template.filled(2.0)
    assert first.details["duration_s"] == 1.0 and second.details["duration_s"] == 2.0
    assert AuditLedger._prepare(first) == _prepared_afresh(first)  # not the last one filled


def test_an_event_json_cannot_encode_fails_as_its_append_would() -> None:
    event = AuditEvent("invocation", "alice", details={"duration_s": 0.0, "v": "\ud800"})
    with pytest.raises(Exception, match="not JSON-safe"):
        prefigure(event, "duration_s")
