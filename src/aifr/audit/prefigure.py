"""An audit event redacted and encoded before the one number it waits for is known.

A workflow step's record is built after its effect, and on PostgreSQL everything
between the effect and the step's statement is time the step waits for: the event
(about 5 µs), its redaction pass and its canonical JSON (about 8 µs). Yet all of it
but the call's duration is known before the effect, while the previous step's commit
is still flushing. So the runtime has the event for the expected outcome redacted and
encoded then, with a unique marker where the duration goes (:func:`prefigure`), and
after the effect fills the duration in: two string joins, not an encoding
(:meth:`EventTemplate.filled`).

The filled event and its encoding are exactly what :meth:`AuditLedger.prepare
<aifr.audit.ledger.AuditLedger.prepare>` would make of it (a property test pins it):
the ledger takes them from here (:func:`known_prepared`) when handed that very event
object, on the thread that filled it. Anywhere else it redacts and encodes as usual,
so a miss costs time, never a different record.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Mapping
from typing import Final

from pydantic import JsonValue

from aifr.audit.record import AuditEvent, PreparedEvent, encode_event_and_details
from aifr.audit.redact import redact_details
from aifr.capabilities import canonical_json

__all__ = ["EventTemplate", "known_prepared", "prefigure"]


_MARKER: Final = f"aifr-prefigured-{secrets.randbelow(10**12):012d}"
"""What stands in the slot until it is filled: unique to this process, so no caller's text
can hold it, and plain words and digits, which no redaction pass takes for a secret."""


class _Last(threading.local):
    prepared: PreparedEvent | None = None


_LAST = _Last()


def known_prepared(event: AuditEvent) -> PreparedEvent | None:
    """``event``'s redaction and encoding, if ``event`` is the one this thread last filled."""
    last = _LAST.prepared
    return last if last is not None and last[0] is event else None


class EventTemplate:
    """An event redacted and encoded with its slot left open; :meth:`filled` closes it."""

    __slots__ = ("_details", "_details_parts", "_event_parts", "_fields", "_slot")

    def __init__(
        self,
        event: AuditEvent,
        slot: str,
        event_parts: tuple[str, str],
        details_parts: tuple[str, str],
    ) -> None:
        self._fields = {
            name: getattr(event, name)
            for name in AuditEvent.__dataclass_fields__
            if name != "details"
        }  # the event's own fields: a new event is built, not replaced (a third of the time)
        self._details = dict(event.details)
        self._slot = slot
        self._event_parts = event_parts
        self._details_parts = details_parts

    def filled(self, value: float) -> AuditEvent:
        """The event with ``value`` in its slot; its encoding is kept for the ledger.

        ``value`` is a number (a duration): no redaction could touch it, so the rest of
        the event's redaction still holds.
        """
        details = dict(self._details)
        details[self._slot] = value
        event = AuditEvent(**self._fields, details=details)
        text = canonical_json(value)
        event_head, event_tail = self._event_parts
        details_head, details_tail = self._details_parts
        _LAST.prepared = (
            event,
            event_head + text + event_tail,
            details_head + text + details_tail,
        )
        return event


def prefigure(event: AuditEvent, slot: str) -> EventTemplate | None:
    """``event`` redacted and encoded now, its ``details[slot]`` left to fill in later.

    ``None`` when the slot cannot be left open: the event has no such detail, or the
    marker did not come through the redaction and encoding exactly once.

    Raises:
        AuditError: the event is not JSON-safe (as appending it would).
    """
    if slot not in event.details:
        return None
    details: Mapping[str, JsonValue] = {**event.details, slot: _MARKER}
    redacted = redact_details(details)
    if redacted.get(slot) != _MARKER:
        return None
    open_event = dataclasses.replace(event, details=dict(redacted))
    event_json, details_json = encode_event_and_details(open_event)
    marker = canonical_json(_MARKER)
    if event_json.count(marker) != 1 or details_json.count(marker) != 1:
        return None
    event_head, _, event_tail = event_json.partition(marker)
    details_head, _, details_tail = details_json.partition(marker)
    return EventTemplate(open_event, slot, (event_head, event_tail), (details_head, details_tail))
