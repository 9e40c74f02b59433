"""Workflow definitions: the YAML format, its JSON Schema and typed run inputs.

A workflow is a name, a version, typed inputs and ordered steps. Each step names a
capability (``io.fs.write_file`` or a pinned ``io.fs.write_file@2``) and its inputs,
which may be templates over the workflow inputs and earlier steps' outputs
(:mod:`aifr.workflows.templating`). Steps carry their own retry policy, timeout,
compensation override and failure rule. The same :class:`WorkflowSpec` comes from a
YAML file (:func:`load_workflow_file`) or from Python (:mod:`aifr.workflows.builder`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from aifr.capabilities import digest
from aifr.errors import ErrorCode, FieldError, InputValidationError, WorkflowError
from aifr.suggestions import did_you_mean
from aifr.workflows.templating import check_templates, has_templates
from aifr.workflows.yaml_reader import read_yaml

__all__ = [
    "STEP_ID_PATTERN",
    "WORKFLOW_NAME_PATTERN",
    "CompensationOverride",
    "InputSpec",
    "RetryPolicy",
    "StepSpec",
    "WorkflowSpec",
    "find_workflow",
    "list_workflows",
    "load_workflow_file",
    "load_workflow_text",
    "workflow_json_schema",
]

STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
WORKFLOW_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"
_REF_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*(@\d+(\.\d+){0,2})?$"
_MODEL = ConfigDict(frozen=True, extra="forbid")

InputType = Literal["string", "integer", "number", "boolean", "object", "array"]
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
DEFAULT_RETRY_ON = ("execution.failed", "execution.timeout")
_VERSION_PATTERN = r"^\d+(\.\d+){0,2}$"


def _version_text(value: object) -> object:
    """Take ``version: 2`` as ``"2"``: YAML reads an unquoted whole number as an int.

    A decimal is refused rather than converted: YAML has already turned ``1.10`` into
    ``1.1``, so the digits the author wrote are gone.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise ValueError(
            f'write the version in quotes (version: "{value}"): YAML read it as the '
            f"number {value!r}, which drops digits such as the 0 of 1.10"
        )
    return value


WorkflowVersion = Annotated[
    str,
    BeforeValidator(_version_text),
    Field(pattern=_VERSION_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _VERSION_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "default": "1",
            "title": "Version",
        }
    ),
]


class RetryPolicy(BaseModel):
    """How often a failed step is tried again, how long to wait, and for which errors.

    ``count`` is the number of retries after the first attempt. The wait before retry
    ``n`` is ``backoff_s * multiplier**(n-1)``, capped at ``max_backoff_s``. Only errors
    whose code is in ``retry_on`` are retried: a denial or bad input never is.
    """

    model_config = _MODEL

    count: Annotated[int, Field(ge=0, le=100)] = 0
    backoff_s: Annotated[float, Field(ge=0, le=3600)] = 0.5
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_backoff_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * self.multiplier ** (retry - 1)))


class CompensationOverride(BaseModel):
    """Replace a step's default compensation: another capability, or none at all.

    ``inputs`` are templates that may use ``output`` (the step's own output),
    ``inputs`` (the workflow's) and ``steps``. ``none: true`` declares that the step
    needs no undo (for example a notification that cannot be taken back).
    """

    model_config = _MODEL

    capability: Annotated[str | None, Field(pattern=_REF_PATTERN)] = None
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    none: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.none == (self.capability is not None):
            raise ValueError("set either 'capability' (with 'inputs') or 'none: true'")
        return self


class StepSpec(BaseModel):
    """One step: a capability call with templated inputs and its failure handling."""

    model_config = _MODEL

    id: Annotated[str, Field(pattern=STEP_ID_PATTERN, max_length=64)]
    capability: Annotated[str, Field(pattern=_REF_PATTERN)]
    description: str = ""
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout_s: Annotated[float | None, Field(gt=0, le=86_400)] = None
    compensation: CompensationOverride | None = None
    on_failure: Literal["compensate", "halt"] | None = None

    @cached_property
    def is_templated(self) -> bool:
        """Whether any input is a template; else a run uses the inputs as written.

        Asked before every execution of the step; the spec is frozen, so it is worked
        out once.
        """
        return has_templates(self.inputs)


class InputSpec(BaseModel):
    """A typed workflow input; without a default it is required."""

    model_config = _MODEL

    type: InputType = "string"
    description: str = ""
    default: JsonValue = None
    required: bool | None = None

    @model_validator(mode="after")
    def _default_has_the_type(self) -> Self:
        if self.default is not None and not _has_type(self.default, self.type):
            raise ValueError(f"default {self.default!r} is not {_article(self.type)} {self.type}")
        return self

    @property
    def is_required(self) -> bool:
        """Whether a run must supply this input."""
        return self.required if self.required is not None else self.default is None


class WorkflowSpec(BaseModel):
    """A whole workflow definition, validated once when loaded."""

    model_config = _MODEL

    name: Annotated[str, Field(pattern=WORKFLOW_NAME_PATTERN, max_length=128)]
    version: WorkflowVersion = "1"
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: Annotated[list[StepSpec], Field(min_length=1)]
    on_failure: Literal["compensate", "halt"] = "compensate"

    @model_validator(mode="after")
    def _steps_are_consistent(self) -> Self:
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.id in seen:
                raise ValueError(f"steps[{index}].id: step id {step.id!r} is used twice")
            check_templates(
                step.inputs,
                where=f"steps[{index}].inputs",
                inputs=set(self.inputs),
                earlier_steps=set(seen),
            )
            if step.compensation is not None:
                check_templates(
                    step.compensation.inputs,
                    where=f"steps[{index}].compensation.inputs",
                    inputs=set(self.inputs),
                    earlier_steps={*seen, step.id},
                    extra_names={"output"},
                )
            seen.add(step.id)
        return self

    @property
    def fingerprint(self) -> str:
        """Digest of the whole definition."""
        return digest(self.definition)

    @cached_property
    def definition(self) -> dict[str, JsonValue]:
        """The JSON form of the spec that each run stores as its snapshot.

        Dumped once per spec and shared by all its runs, which only read it (and the
        run store encodes one shared definition once).
        """
        return self.model_dump(mode="json")

    @classmethod
    def from_snapshot(cls, definition: Mapping[str, Any]) -> WorkflowSpec:
        """The spec of a run's stored snapshot (its :attr:`definition`), validated once.

        A worker loads every run it claims, and the runs of one workflow carry the same
        snapshot: validating its 3 kB again for each run cost about 40 µs, against 3 µs
        to compare it with the last spec validated for the same name and version. A
        snapshot that differs in anything (an edited definition under the same version,
        one written by an older release) is validated on its own and replaces it.

        Raises:
            pydantic.ValidationError: the snapshot is no valid workflow.
        """
        if not isinstance(definition, Mapping):
            return cls.model_validate(definition)
        key = (definition.get("name"), definition.get("version"))
        known = _SNAPSHOTS.get(key)
        if known is not None and (known[0] is definition or known[1].definition == definition):
            return known[1]
        spec = cls.model_validate(definition)
        if len(_SNAPSHOTS) >= _SNAPSHOTS_KEPT:
            _SNAPSHOTS.clear()
        _SNAPSHOTS[key] = (definition, spec)
        return spec

    def step(self, step_id: str) -> StepSpec:
        """The step with this id.

        Raises:
            WorkflowError: no such step.
        """
        found = self.steps_by_id.get(step_id)
        if found is None:
            raise WorkflowError(f"workflow {self.name} has no step {step_id!r}", step_id=step_id)
        return found

    @cached_property
    def steps_by_id(self) -> dict[str, StepSpec]:
        """The steps keyed by id (looked up before every step the engine runs)."""
        return {step.id: step for step in self.steps}

    def failure_rule(self, step: StepSpec) -> Literal["compensate", "halt"]:
        """What a failure of ``step`` does: its own rule, else the workflow's."""
        return step.on_failure or self.on_failure

    def bind_inputs(self, values: Mapping[str, Any]) -> dict[str, JsonValue]:
        """Check run inputs against the declared types and fill in defaults.

        Raises:
            InputValidationError: an input is unknown, missing or of the wrong type.
        """
        bound: dict[str, JsonValue] = {}
        problems = [
            FieldError(
                path=key,
                code="unknown",
                message=f"workflow {self.name} has no input {key!r}",
                expected=list[JsonValue](sorted(self.inputs)),
                received=key,
            )
            for key in sorted(set(values) - set(self.inputs))
        ]
        for key, declared in self.inputs.items():
            if key not in values:
                if declared.is_required:
                    problems.append(
                        FieldError(
                            path=key,
                            code="required",
                            message=f"input {key!r} is required",
                            expected=declared.type,
                        )
                    )
                else:
                    bound[key] = declared.default
                continue
            value = values[key]
            if not _has_type(value, declared.type):
                problems.append(
                    FieldError(
                        path=key,
                        code="type",
                        message=f"input {key!r} must be {_article(declared.type)} {declared.type}",
                        expected=declared.type,
                        received=type(value).__name__,
                    )
                )
                continue
            bound[key] = value
        if problems:
            raise InputValidationError(
                f"workflow {self.name}: invalid inputs: "
                + "; ".join(f"{p.path}: {p['message']}" for p in problems),
                errors=problems,
                workflow=self.name,
            )
        return bound


def _has_type(value: Any, kind: str) -> bool:
    """Whether ``value`` is a JSON value of ``kind``.

    NaN and infinity are no JSON values (``--input x=NaN`` parses as one in Python): a
    run holding one could not be written out as JSON, nor read back by other tools.
    """
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if not isinstance(value, _PY_TYPES[kind]):
        return False
    if isinstance(value, str | bool | int):
        return True
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):  # NaN, infinity, or something JSON cannot hold
        return False
    return True


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow YAML format (for editors and ``aifr`` docs)."""
    schema = WorkflowSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aifr workflow"
    return schema


def _location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in error["loc"])


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field" + did_you_mean(WorkflowSpec, error["loc"])
    if error["type"] == "value_error":  # our validators' own text, which names the field
        return str(error["ctx"]["error"])
    return str(error["msg"])


_SNAPSHOTS_KEPT: Final = 256
"""Most workflow versions whose validated snapshot :meth:`WorkflowSpec.from_snapshot` keeps."""
_SNAPSHOTS: dict[tuple[Any, Any], tuple[Mapping[str, Any], WorkflowSpec]] = {}
"""The last snapshot validated, and its spec, by workflow name and version.

The snapshot itself is kept to be recognised by identity: runs read back with the same
stored text share one decoded definition (``aifr.storage.run_rows``), which they only read.
"""


def _problem(error: Mapping[str, Any]) -> str:
    where = _location(error).replace(".[", "[")
    return f"{where}: {_message(error)}" if where else _message(error)


def _parse(data: Any, source: str) -> WorkflowSpec:
    if not isinstance(data, dict):
        raise WorkflowError(
            f"{source}: a workflow must be a YAML mapping with 'name' and 'steps'",
            file=source,
        )
    try:
        return WorkflowSpec.model_validate(data)
    except PydanticValidationError as exc:
        problems = [_problem(e) for e in exc.errors(include_url=False)]
        raise WorkflowError(
            f"{source}: invalid workflow: " + "; ".join(problems),
            file=source,
            problems=list[JsonValue](problems),
        ) from None


def load_workflow_text(text: str, source: str = "<workflow>") -> WorkflowSpec:
    """Parse one workflow from YAML text.

    Raises:
        WorkflowError: the YAML is malformed (or repeats a key, or its aliases expand
            without bound) or the definition is invalid (the message names the source
            and the field).
    """
    return _parse(read_yaml(text, source), source)


def load_workflow_file(path: Path | str) -> WorkflowSpec:
    """Read and parse one workflow file.

    Raises:
        WorkflowError: ``workflow.not_found`` when the file is missing, otherwise
            ``workflow.invalid`` naming the file and field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(
            f"no workflow file {path}", code=ErrorCode.WORKFLOW_NOT_FOUND, file=str(path)
        ) from None
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read: {exc.strerror}", file=str(path)) from None
    return load_workflow_text(text, str(path))


def list_workflows(directory: Path) -> list[WorkflowSpec]:
    """Every workflow defined in ``directory`` (``*.yaml``, ``*.yml``), in file-name order.

    Raises:
        WorkflowError: a file is invalid (the message names it).
    """
    if not directory.is_dir():
        return []
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    return [load_workflow_file(path) for path in files]


def find_workflow(directory: Path, name_or_path: str) -> WorkflowSpec:
    """A workflow by file path, by file stem in ``directory``, or by its ``name``.

    Raises:
        WorkflowError: ``workflow.not_found`` naming what was looked for, or the file
            is invalid.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return load_workflow_file(candidate)
    for suffix in (".yaml", ".yml"):
        path = directory / f"{name_or_path}{suffix}"
        if path.is_file():
            return load_workflow_file(path)
    for spec in list_workflows(directory):
        if spec.name == name_or_path:
            return spec
    raise WorkflowError(
        f"no workflow named {name_or_path!r} (looked for a file of that name and in {directory})",
        code=ErrorCode.WORKFLOW_NOT_FOUND,
        workflow=name_or_path,
    )
