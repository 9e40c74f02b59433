"""Capability specs become MCP tools with the right schemas and annotations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, Field

from aifr.capabilities import Compensation, capability
from aifr.stdlib import build_stdlib
from aifr.transports.mcp.protocol import (
    ANNOTATIONS_SINCE,
    STRUCTURED_OUTPUT_SINCE,
    result_for_version,
    supports,
    tool_for_version,
)
from aifr.transports.mcp.results import ok_result
from aifr.transports.mcp.tools import (
    annotations_for,
    approval_status_tool,
    output_schema_for,
    structured_output,
    tool_for_spec,
)


@capability("files.read", operation="READ", risk="LOW", idempotent=False)
def read(path: Annotated[str, Field(min_length=1)]) -> dict[str, str]:
    """Read a file.

    Args:
        path: Which file.
    """
    return {"path": path}


@capability("files.count", operation="READ", risk="LOW")
def count(path: str) -> int:
    """Count lines."""
    return len(path)


@capability(
    "files.delete",
    operation="DELETE",
    risk="HIGH",
    compensation=Compensation(supported=True, strategy="trash"),
)
def delete(path: str) -> None:
    """Delete a file."""


@capability("files.append", operation="WRITE", risk="MEDIUM", idempotent=True)
def append(path: str, text: str) -> None:
    """Append text."""


@capability("web.fetch", operation="NETWORK", risk="MEDIUM", side_effect_scope="external")
def fetch(url: str) -> str:
    """Fetch a URL."""
    return url


@capability(
    "mail.send",
    operation="EXECUTE",
    reversible=False,
    risk="CRITICAL",
    side_effect_scope="external",
    requires_approval=True,
)
def send(to: str) -> None:
    """Send a mail."""


class Stamp(BaseModel):
    """Times with and without a UTC offset."""

    naive: dt.datetime
    aware: dt.datetime
    clock: dt.time
    day: dt.date
    format: str


@capability("clock.stamp", operation="READ", risk="LOW")
def stamp(offset: bool) -> Stamp:
    """Stamp a time."""
    zone = dt.UTC if offset else None
    return Stamp(
        naive=dt.datetime(2024, 5, 1, 12, 30, 0, 250000),
        aware=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        clock=dt.time(12, 30, tzinfo=zone),
        day=dt.date(2024, 5, 1),
        format="x",
    )


@capability("clock.now", operation="READ", risk="LOW")
def now() -> list[dt.datetime]:
    """The time, as a list."""
    return [dt.datetime(2024, 5, 1, 12, 30)]


def test_structured_times_without_an_offset_satisfy_the_output_schema_with_formats_checked() -> (
    None
):
    # ajv-formats in the TypeScript SDK checks date-time and time as RFC 3339 (offset
    # required), as jsonschema's FormatChecker does; a naive value must not fail there.
    for spec, inputs in ((stamp.spec, {"offset": False}), (stamp.spec, {"offset": True})):
        schema = output_schema_for(spec)
        assert schema is not None
        output = stamp.validate_output(stamp.handler(**inputs))
        validator = Draft202012Validator(schema, format_checker=FormatChecker())
        assert list(validator.iter_errors(structured_output(spec, output))) == []
    wrapped = output_schema_for(now.spec)
    assert wrapped is not None
    validator = Draft202012Validator(wrapped, format_checker=FormatChecker())
    assert list(validator.iter_errors({"result": ["2024-05-01T12:30:00"]})) == []
    assert list(validator.iter_errors({"result": ["2024-05-01"]})) != []
    # Other formats stay, and a property named "format" is a property, not a keyword.
    properties = output_schema_for(stamp.spec)["properties"]  # type: ignore[index]
    assert properties["day"]["format"] == "date"
    assert properties["format"] == {"title": "Format", "type": "string"}


def test_read_capability_is_read_only_idempotent_and_closed_world() -> None:
    hints = annotations_for(read.spec)
    assert hints.read_only_hint is True
    assert hints.destructive_hint is False
    assert hints.idempotent_hint is True
    assert hints.open_world_hint is False


def test_delete_capability_is_destructive() -> None:
    hints = annotations_for(delete.spec)
    assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint) == (
        False,
        True,
        False,
    )


def test_reversible_idempotent_write_is_additive_and_idempotent() -> None:
    hints = annotations_for(append.spec)
    assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint) == (
        False,
        False,
        True,
    )


def test_network_and_external_scope_make_a_tool_open_world() -> None:
    assert annotations_for(fetch.spec).open_world_hint is True
    hints = annotations_for(send.spec)
    assert hints.open_world_hint is True
    assert hints.destructive_hint is True


def test_tool_carries_the_capability_input_schema_and_description() -> None:
    tool = tool_for_spec(read.spec)
    assert tool.name == "files.read"
    assert tool.input_schema["type"] == "object"
    assert tool.input_schema["properties"]["path"]["minLength"] == 1
    assert tool.input_schema["required"] == ["path"]
    assert tool.description is not None
    assert tool.description.startswith("Read a file.")
    assert "risk LOW" in tool.description
    assert tool.meta is not None
    assert tool.meta["aifr/fingerprint"] == read.spec.fingerprint


def test_tool_description_says_when_every_call_needs_approval() -> None:
    description = tool_for_spec(send.spec).description
    assert description is not None
    assert "needs human approval" in description


def test_object_output_schema_is_advertised_as_is() -> None:
    schema = output_schema_for(read.spec)
    assert schema is not None
    assert schema["type"] == "object"
    assert structured_output(read.spec, {"path": "a"}) == {"path": "a"}


def test_non_object_output_is_wrapped_under_result() -> None:
    schema = output_schema_for(count.spec)
    assert schema == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }
    assert structured_output(count.spec, 3) == {"result": 3}


def test_capability_without_output_has_no_output_schema() -> None:
    assert tool_for_spec(delete.spec).output_schema is None
    assert structured_output(delete.spec, None) is None


def test_approval_status_tool_requires_an_approval_id() -> None:
    tool = approval_status_tool()
    assert tool.input_schema["required"] == ["approval_id"]
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is True


def test_stdlib_tools_carry_the_hints_their_effects_imply(tmp_path: Path) -> None:
    specs = {
        item.spec.id: item.spec
        for item in build_stdlib(project_dir=tmp_path, state_dir=tmp_path / ".aifr")
    }
    hints = {
        capability_id: (
            annotations.read_only_hint,
            annotations.destructive_hint,
            annotations.open_world_hint,
        )
        for capability_id, annotations in (
            (capability_id, annotations_for(spec)) for capability_id, spec in specs.items()
        )
    }
    # each tuple: read-only, destructive, open-world hints
    assert hints["io.fs.read_file"] == (True, False, False)
    assert hints["io.fs.write_file"] == (False, False, False)  # undone by io.fs.restore
    assert hints["io.fs.delete"] == (False, True, False)
    assert hints["io.net.http_get"] == (True, False, True)
    assert hints["io.net.http_request"] == (False, True, True)
    assert hints["sys.exec"] == (False, True, False)


def test_dated_versions_compare_by_date_and_a_draft_counts_as_the_newest() -> None:
    assert supports("2025-06-18", STRUCTURED_OUTPUT_SINCE)
    assert supports("2025-11-25", STRUCTURED_OUTPUT_SINCE)
    assert not supports("2025-03-26", STRUCTURED_OUTPUT_SINCE)
    assert supports("2025-03-26", ANNOTATIONS_SINCE)
    assert not supports("2024-11-05", ANNOTATIONS_SINCE)
    assert supports("DRAFT-2026-v1", STRUCTURED_OUTPUT_SINCE)


def test_a_tool_for_an_older_protocol_keeps_only_the_fields_that_version_defines() -> None:
    tool = tool_for_spec(read.spec)

    assert tool_for_version(tool, "2025-06-18") is tool
    march = tool_for_version(tool, "2025-03-26")
    assert march.output_schema is None and march.title is None and march.meta is None
    assert march.annotations == tool.annotations
    assert march.input_schema == tool.input_schema
    november = tool_for_version(tool, "2024-11-05")
    assert november.annotations is None
    assert november.description == tool.description
    assert tool.output_schema is not None  # the original is not changed


def test_a_result_for_an_older_protocol_drops_structured_content_but_keeps_the_text() -> None:
    result = ok_result(read.spec, {"path": "a.txt"})

    assert result_for_version(result, "2025-06-18") is result
    older = result_for_version(result, "2025-03-26")
    assert older.structured_content is None
    assert older.content == result.content
    assert result.structured_content == {"path": "a.txt"}
