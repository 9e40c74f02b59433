"""Templates cannot build values too large for a worker, whatever the run's inputs say."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows import template_limits
from aifr.workflows.jinja_sandbox import JinjaTemplateError, names_used
from aifr.workflows.templating import render_inputs

_CONTEXT: dict[str, Any] = {
    "inputs": {"s": "abc", "n": 10**12, "items": list(range(3000))},
    "steps": {},
    "run": {"id": "run-1", "workflow": "w", "principal": "agent"},
}


def _render(template: str) -> Any:
    return render_inputs({"v": template}, _CONTEXT, where="steps.t.inputs")["v"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.s * inputs.n }}",
        "{{ inputs.n * inputs.s }}",
        "{{ [0] * inputs.n }}",
        "{{ 9 ** 999999999 }}",
        "{{ inputs.n ** inputs.n }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '%*d' % (inputs.n, 1) }}",
        "{{ '%999999999s' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ inputs.s | center(inputs.n) }}",
        "{{ inputs.s | indent(inputs.n) }}",
        "{{ inputs.s.ljust(inputs.n) }}",
        "{{ inputs.s.zfill(width=inputs.n) }}",
        "{{ lipsum(inputs.n) }}",
        "x{% for a in inputs.items %}{% for b in inputs.items %}{{ inputs.s * 9 }}"
        "{% endfor %}{% endfor %}",
    ],
)
def test_a_template_asking_for_a_huge_value_fails_before_building_it(template: str) -> None:
    with pytest.raises(WorkflowError) as refused:
        _render(template)

    assert refused.value.code is ErrorCode.WORKFLOW_TEMPLATE_FAILED
    assert refused.value.details["path"] == "steps.t.inputs.v"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.s * 3 }}", "abcabcabc"),
        ("{{ 2 ** 100 }}", 2**100),
        ("{{ inputs.n * inputs.n }}", 10**24),
        ("{{ '%05d|%-4s|%.2f' % (7, 'a', 1.5) }}", "00007|a   |1.50"),
        ("{{ '%s-%s' | format(1, 2) }}", "1-2"),
        ("{{ '{:>5}|{}'.format(1, 'b') }}", "    1|b"),
        ("{{ inputs.s | center(7) }}", "  abc  "),
        ("{{ inputs.s.rjust(5) }}", "  abc"),
        ("{{ range(3) | list }}", [0, 1, 2]),
        ("{% for i in inputs.items[:3] %}{{ i }},{% endfor %}", "0,1,2,"),
    ],
)
def test_ordinary_repetition_padding_and_formatting_still_work(
    template: str, expected: object
) -> None:
    assert _render(template) == expected


def test_a_missing_item_is_named_rather_than_reported_as_an_undefined_object() -> None:
    with pytest.raises(WorkflowError) as refused:
        _render("{{ inputs.items[5000] }}")

    assert refused.value.code is ErrorCode.WORKFLOW_TEMPLATE_FAILED
    assert "no element 5000" in refused.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{% for a in inputs.items %}{% for b in inputs.items %}{% for c in inputs.items %}"
        "{% endfor %}{% endfor %}{% endfor %}done",
        "{% macro twice(n) %}{% if n > 0 %}{{ twice(n - 1) }}{{ twice(n - 1) }}{% endif %}"
        "{% endmacro %}{{ twice(60) }}",
        "{% for a in inputs.items %}{% set found = inputs.items | select('equalto', a) | list %}"
        "{% endfor %}",
    ],
    ids=["nested-loops", "self-calling-macro", "quadratic-filter"],
)
def test_a_template_that_builds_nothing_but_runs_on_is_stopped_at_the_deadline(
    template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(template_limits, "MAX_RENDER_S", 0.2)
    started = time.monotonic()

    with pytest.raises(WorkflowError) as refused:
        _render(template)

    assert time.monotonic() - started < 2.0
    assert refused.value.code is ErrorCode.WORKFLOW_TEMPLATE_FAILED
    assert "ran for over 0.2 s" in refused.value.message
    assert refused.value.details["path"] == "steps.t.inputs.v"


def test_a_recursive_loop_is_refused_when_the_template_is_read_and_when_it_renders() -> None:
    template = "{% for a in inputs.items recursive %}{{ loop(inputs.items) }}{% endfor %}"

    with pytest.raises(JinjaTemplateError, match="recursive loops are not allowed"):
        names_used(template)
    with pytest.raises(WorkflowError) as refused:
        _render(template)
    assert "recursive loops are not allowed" in refused.value.message


def test_loops_keep_their_loop_variable_and_else_branch() -> None:
    template = (
        "{% for i in inputs.items[:3] %}{{ loop.index }}/{{ loop.length }}"
        "{% if loop.last %}!{% endif %} {% endfor %}"
        "{% for i in [] %}x{% else %}empty{% endfor %}"
    )

    assert _render(template) == "1/3 2/3 3/3! empty"
