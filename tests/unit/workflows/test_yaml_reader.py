"""Workflow files whose YAML hides a trap: repeated keys, alias bombs, deep nesting."""

from __future__ import annotations

import math

import pytest

from aifr.errors import ErrorCode, InputValidationError, WorkflowError
from aifr.workflows import load_workflow_text

STEP = """
steps:
  - id: a
    capability: data.json.parse
    inputs: {text: "1"}
"""

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "name: bomb\n"
    + STEP.replace('{text: "1"}', '{text: "1", x: *i}')
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: first\nname: second\n" + STEP, "line 2: key 'name' is repeated"),
        (
            "name: w\n" + STEP + '    inputs: {text: "2"}\n',
            "line 7: key 'inputs' is repeated",
        ),
        ("name: w\ninputs: {n: {type: string, type: integer}}\n" + STEP, "key 'type'"),
        (BILLION_LAUGHS, "aliases expand it to over"),
        ("name: &n [*n]\n" + STEP, "refers to a value that contains it"),
        ("name: " + "[" * 3000 + "]" * 3000 + "\n" + STEP, "nested too deeply"),
    ],
)
def test_a_yaml_trap_is_refused_naming_the_file_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(WorkflowError) as refused:
        load_workflow_text(text, "workflows/w.yaml")

    assert refused.value.code is ErrorCode.WORKFLOW_INVALID
    assert refused.value.message.startswith("workflows/w.yaml: invalid YAML: ")
    assert problem in refused.value.message


def test_anchors_aliases_and_merge_keys_used_sensibly_still_work() -> None:
    spec = load_workflow_text(
        """
name: shared
steps:
  - &parse
    id: a
    capability: data.json.parse
    inputs: {text: "1"}
    retry: &retry {count: 2, backoff_s: 0.1}
  - <<: *parse
    id: b
  - id: c
    capability: data.json.parse
    inputs: {text: "2"}
    retry: *retry
"""
    )

    assert [s.id for s in spec.steps] == ["a", "b", "c"]
    assert spec.steps[1].retry.count == spec.steps[2].retry.count == 2


def test_a_model_level_problem_names_the_field_without_pydantic_s_prefix() -> None:
    with pytest.raises(WorkflowError) as refused:
        load_workflow_text("name: w\n" + STEP + STEP.replace("steps:\n", ""), "w.yaml")

    assert "invalid workflow: steps[1].id: step id 'a' is used twice" in refused.value.message
    assert "Value error" not in refused.value.message


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ("{type: integer, default: abc}", "default 'abc' is not an integer"),
        ("{type: boolean, default: 1}", "default 1 is not a boolean"),
        ("{type: array, default: {a: 1}}", "default {'a': 1} is not an array"),
        ("{type: number, default: .nan}", "default nan is not a number"),
    ],
)
def test_a_default_of_the_wrong_type_is_refused_when_the_file_loads(
    declaration: str, problem: str
) -> None:
    with pytest.raises(WorkflowError) as refused:
        load_workflow_text(f"name: w\ninputs:\n  n: {declaration}\n" + STEP, "w.yaml")

    assert f"inputs.n: {problem}" in refused.value.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"a": math.inf}])
def test_nan_and_infinity_are_no_json_input_values(value: object) -> None:
    kind = "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "number"
    spec = load_workflow_text(f"name: w\ninputs:\n  x: {{type: {kind}}}\n" + STEP)

    with pytest.raises(InputValidationError) as refused:
        spec.bind_inputs({"x": value})

    assert refused.value.errors[0].path == "x"
    assert refused.value.errors[0].code == "type"
