"""Template rendering over JSON data: names, types and failures as a workflow author sees them."""

from __future__ import annotations

from typing import Any

from aifr.workflows.templating import render_inputs


def test_a_field_named_like_a_mapping_method_is_the_field_not_the_method() -> None:
    context: dict[str, Any] = {
        "inputs": {"items": [1, 2], "keys": "k"},
        "steps": {"q": {"output": {"values": {"get": 3}, "copy": True}}},
        "run": {},
    }
    templates = {
        "items": "{{ inputs.items }}",
        "keys": "{{ inputs.keys }}!",
        "get": "{{ steps.q.output['values'].get }}",
        "values": "{{ steps.q.output.values }}",
        "copy": "{{ steps.q.output.copy }}",
        "method": "{{ steps.q.output.items() | list | length }}",
    }

    rendered = render_inputs(templates, context, where="steps.t.inputs")

    assert rendered == {
        "items": [1, 2],
        "keys": "k!",
        "get": 3,
        "values": {"get": 3},
        "copy": True,
        "method": 2,  # no key 'items' there: the method still works
    }
