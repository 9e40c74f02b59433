"""Workflow specs: YAML and builder give one definition; bad definitions name the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from aifr.errors import ErrorCode, InputValidationError, WorkflowError
from aifr.workflows import (
    RetryPolicy,
    WorkflowBuilder,
    find_workflow,
    has_templates,
    load_workflow_file,
    load_workflow_text,
    render_inputs,
    workflow,
    workflow_json_schema,
)

SCHEMA_FILE = Path(__file__).parents[3] / "src" / "aifr" / "workflows" / "workflow.schema.json"

ROTATE = """
name: rotate-config
version: "2"
description: rotate a config file
inputs:
  path: {type: string}
  replicas: {type: integer, default: 2}
steps:
  - id: read
    capability: io.fs.read_file
    inputs: {path: "{{ inputs.path }}"}
  - id: write
    capability: io.fs.write_file@1
    inputs:
      path: "{{ inputs.path }}"
      content: "replicas={{ inputs.replicas }}\\n{{ steps.read.output.content }}"
    retry: {count: 2, backoff_s: 0.1}
    timeout_s: 5
  - id: notify
    capability: io.net.http_request
    inputs: {url: "http://127.0.0.1/health"}
    compensation: {none: true}
    on_failure: halt
"""


def test_the_builder_and_yaml_produce_the_same_definition() -> None:
    @workflow("rotate-config", version="2", description="rotate a config file")
    def rotate(w: WorkflowBuilder) -> None:
        w.input("path", "string").input("replicas", "integer", default=2)
        w.step("read", "io.fs.read_file", path="{{ inputs.path }}")
        w.step(
            "write", "io.fs.write_file@1",
            path="{{ inputs.path }}",
            content="replicas={{ inputs.replicas }}\n{{ steps.read.output.content }}",
            retry={"count": 2, "backoff_s": 0.1}, timeout_s=5,
        )  # fmt: skip
        w.step(
            "notify", "io.net.http_request", url="http://127.0.0.1/health",
            compensation={"none": True}, on_failure="halt",
        )  # fmt: skip

    assert rotate == load_workflow_text(ROTATE)
    assert rotate.fingerprint == load_workflow_text(ROTATE).fingerprint


def test_every_valid_workflow_validates_against_the_published_json_schema() -> None:
    jsonschema.validate(yaml.safe_load(ROTATE), workflow_json_schema())


def test_the_shipped_schema_file_is_generated_from_the_workflow_models() -> None:
    shipped = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    jsonschema.Draft202012Validator.check_schema(shipped)
    assert shipped == workflow_json_schema()


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ({"steps": []}, "steps"),
        ({"name": "has space"}, "name"),
        (
            {"steps": [{"id": "a", "capability": "x.y"}, {"id": "a", "capability": "x.z"}]},
            "used twice",
        ),
        (
            {"steps": [{"id": "a", "capability": "x.y", "inputs": {"p": "{{ steps.b.output }}"}}]},
            "do not run before",
        ),
        (
            {"steps": [{"id": "a", "capability": "x.y", "inputs": {"p": "{{ inputs.nope }}"}}]},
            "no workflow input",
        ),
        (
            {"steps": [{"id": "a", "capability": "x.y", "inputs": {"p": "{{ os.system }}"}}]},
            "unknown name",
        ),
        (
            {"steps": [{"id": "a", "capability": "x.y", "inputs": {"p": "{{ oops"}}]},
            "does not parse",
        ),
        ({"steps": [{"id": "a", "capability": "x.y", "retry": {"count": -1}}]}, "retry.count"),
        ({"steps": [{"id": "a", "capability": "x.y", "surprise": 1}]}, "surprise"),
    ],
)
def test_an_invalid_definition_is_refused_naming_the_field(mutation: dict, field: str) -> None:
    data = {"name": "w", "steps": [{"id": "a", "capability": "x.y"}], **mutation}

    with pytest.raises(WorkflowError) as refused:
        load_workflow_text(yaml.safe_dump(data), "workflows/w.yaml")

    assert refused.value.code is ErrorCode.WORKFLOW_INVALID
    assert field in refused.value.message
    assert "workflows/w.yaml" in refused.value.message


def test_an_unquoted_whole_number_version_means_the_same_as_the_quoted_one() -> None:
    steps = "steps: [{id: a, capability: x.y}]\n"

    unquoted = load_workflow_text(f"name: w\nversion: 2\n{steps}")

    assert unquoted.version == "2"
    assert unquoted == load_workflow_text(f'name: w\nversion: "2"\n{steps}')
    jsonschema.validate(yaml.safe_load(f"name: w\nversion: 2\n{steps}"), workflow_json_schema())


def test_an_unquoted_decimal_version_is_refused_asking_for_quotes() -> None:
    # YAML turned 1.10 into the float 1.1: converting it back would change the version.
    with pytest.raises(WorkflowError) as refused:
        load_workflow_text("name: w\nversion: 1.10\nsteps: [{id: a, capability: x.y}]\n")

    assert 'version: "1.1"' in refused.value.message
    assert "quotes" in refused.value.message


def test_a_misspelt_field_names_the_field_allowed_there() -> None:
    text = "name: w\nsteps:\n  - {id: a, capability: x.y, inptus: {}, retry: {cuont: 2}}\n"

    with pytest.raises(WorkflowError) as refused:
        load_workflow_text(text)

    assert "steps[0].inptus: unknown field (did you mean 'inputs'?)" in refused.value.message
    assert "steps[0].retry.cuont: unknown field (did you mean 'count'?)" in refused.value.message


def test_malformed_yaml_is_refused_with_the_file_name() -> None:
    with pytest.raises(WorkflowError) as refused:
        load_workflow_text("name: [unclosed", "w.yaml")
    assert refused.value.code is ErrorCode.WORKFLOW_INVALID
    assert "w.yaml" in refused.value.message


def test_inputs_are_typed_defaulted_and_unknown_ones_refused() -> None:
    spec = load_workflow_text(ROTATE)

    assert spec.bind_inputs({"path": "a.conf"}) == {"path": "a.conf", "replicas": 2}
    with pytest.raises(InputValidationError) as bad:
        spec.bind_inputs({"replicas": "three", "extra": 1})
    assert bad.value.code is ErrorCode.INPUT_INVALID
    assert sorted(e.path for e in bad.value.errors) == ["extra", "path", "replicas"]


def test_a_workflow_is_found_by_file_by_stem_or_by_name(tmp_path: Path) -> None:
    (tmp_path / "rotate.yaml").write_text(ROTATE)

    assert find_workflow(tmp_path, "rotate").name == "rotate-config"
    assert find_workflow(tmp_path, "rotate-config").name == "rotate-config"
    assert load_workflow_file(tmp_path / "rotate.yaml").version == "2"
    with pytest.raises(WorkflowError) as missing:
        find_workflow(tmp_path, "nothing")
    assert missing.value.code is ErrorCode.WORKFLOW_NOT_FOUND


def test_templates_cannot_reach_python_internals() -> None:
    context = {"inputs": {"s": "x"}, "steps": {}, "run": {}}

    with pytest.raises(WorkflowError) as refused:
        render_inputs({"p": "{{ inputs.s.__class__.__mro__ }}"}, context, where="t")

    assert refused.value.code is ErrorCode.WORKFLOW_TEMPLATE_FAILED


def test_a_mixed_template_renders_text_and_a_whole_expression_keeps_its_type() -> None:
    context = {"inputs": {"n": 3, "tags": ["a", "b"]}, "steps": {}, "run": {}}

    rendered = render_inputs(
        {"text": "n={{ inputs.n }}", "n": "{{ inputs.n }}", "tags": "{{ inputs.tags }}",
         "nested": [{"v": "{{ inputs.n + 1 }}"}]},
        context,
        where="t",
    )  # fmt: skip

    assert rendered == {"text": "n=3", "n": 3, "tags": ["a", "b"], "nested": [{"v": 4}]}


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(count=5, backoff_s=1, multiplier=3, max_backoff_s=5)

    assert [policy.delay(n) for n in (1, 2, 3)] == [1, 3, 5]


def test_builder_inputs_may_share_a_name_with_the_builder_s_own_keywords() -> None:
    spec = (
        WorkflowBuilder("clash")
        .step("a", "x.y", input_map={"retry": 3, "timeout_s": "soon"}, other=1)
        .build()
    )

    assert spec.steps[0].inputs == {"retry": 3, "timeout_s": "soon", "other": 1}
    assert spec.steps[0].retry.count == 0


def test_templates_are_found_at_any_depth_and_plain_values_are_not() -> None:
    assert has_templates({"a": [{"b": "{{ inputs.x }}"}]})
    assert has_templates({"a": "{% if true %}x{% endif %}"})
    assert not has_templates({"a": ["plain", {"b": 1, "c": None}], "d": "no braces"})


def test_a_run_s_snapshot_is_validated_once_and_any_change_is_validated_again() -> None:
    from pydantic import ValidationError

    from aifr.workflows import WorkflowSpec

    spec = load_workflow_text(ROTATE)
    snapshot = json.loads(json.dumps(spec.definition))  # as a run store reads it back
    first = WorkflowSpec.from_snapshot(snapshot)
    assert first == spec
    assert WorkflowSpec.from_snapshot(json.loads(json.dumps(snapshot))) is first

    edited = json.loads(json.dumps(snapshot))  # same name and version, another step
    edited["steps"][0]["capability"] = "io.fs.stat"
    changed = WorkflowSpec.from_snapshot(edited)
    assert changed is not first
    assert changed.steps[0].capability == "io.fs.stat"
    assert WorkflowSpec.from_snapshot(snapshot).steps[0].capability == "io.fs.read_file"

    broken = json.loads(json.dumps(snapshot))
    broken["steps"] = []
    with pytest.raises(ValidationError):
        WorkflowSpec.from_snapshot(broken)
    with pytest.raises(ValidationError):
        WorkflowSpec.from_snapshot(None)  # type: ignore[arg-type]  # a corrupt row
