"""``nats://`` sink URLs: the stream and the subject prefix, and the cursor name they make."""

from __future__ import annotations

import pytest

from aifr.audit import NatsSink, sink_from_url
from aifr.audit.sinks import sink_name
from aifr.errors import AifrError, ErrorCode


def test_the_default_subjects_keep_the_name_and_cursor_of_before() -> None:
    assert sink_name("nats://127.0.0.1:4222") == "nats:nats://127.0.0.1:4222/AIFR_AUDIT"
    sink = sink_from_url("nats://127.0.0.1:4222/S")
    assert isinstance(sink, NatsSink)
    assert (sink.stream, sink.subject_prefix, sink.name) == (
        "S",
        "aifr.audit",
        "nats:nats://127.0.0.1:4222/S",
    )


def test_a_subject_prefix_is_used_and_shown_in_the_name() -> None:
    url = "nats://user:pw@127.0.0.1:4222/S?subjects=team.audit"
    sink = sink_from_url(url)
    assert isinstance(sink, NatsSink)
    assert sink.subject_prefix == "team.audit"
    assert sink.checkpoint_subject == "team.audit._checkpoint"
    assert (
        sink.name == sink_name(url) == "nats:nats://user:***@127.0.0.1:4222/S?subjects=team.audit"
    )


@pytest.mark.parametrize("prefix", ["a b", "a.>", ".a", "a."])
def test_a_prefix_that_is_no_subject_is_refused(prefix: str) -> None:
    with pytest.raises(AifrError) as caught:
        sink_from_url(f"nats://127.0.0.1:4222/S?subjects={prefix}")
    assert caught.value.code is ErrorCode.CONFIG_INVALID
