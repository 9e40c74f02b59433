"""Define workflows in Python: a fluent builder and the ``@workflow`` decorator.

Both produce the same :class:`~aifr.workflows.spec.WorkflowSpec` a YAML file does, so
a definition written either way runs, validates and fingerprints identically::

    @workflow("rotate-config", inputs={"path": "string"})
    def rotate(w: WorkflowBuilder) -> None:
        w.step("read", "io.fs.read_file", path="{{ inputs.path }}")
        w.step("write", "io.fs.write_file", path="{{ inputs.path }}", content="new")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import JsonValue
from pydantic import ValidationError as PydanticValidationError

from aifr.errors import WorkflowError
from aifr.workflows.spec import WorkflowSpec

__all__ = ["WorkflowBuilder", "workflow"]


class WorkflowBuilder:
    """Collects inputs and steps, then validates them into a :class:`WorkflowSpec`."""

    def __init__(
        self,
        name: str,
        *,
        version: str = "1",
        description: str = "",
        on_failure: Literal["compensate", "halt"] = "compensate",
    ) -> None:
        self._data: dict[str, Any] = {
            "name": name,
            "version": version,
            "description": description,
            "on_failure": on_failure,
            "inputs": {},
            "steps": [],
        }

    def input(
        self,
        name: str,
        type: str = "string",  # noqa: A002  # the YAML key is "type"
        *,
        default: JsonValue = None,
        description: str = "",
        required: bool | None = None,
    ) -> WorkflowBuilder:
        """Declare a typed input (required unless it has a default)."""
        declared: dict[str, Any] = {"type": type, "description": description}
        if default is not None:
            declared["default"] = default
        if required is not None:
            declared["required"] = required
        self._data["inputs"][name] = declared
        return self

    def step(
        self,
        id: str,  # noqa: A002  # the YAML key is "id"
        capability: str,
        *,
        retry: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        compensation: Mapping[str, Any] | None = None,
        on_failure: Literal["compensate", "halt"] | None = None,
        description: str = "",
        input_map: Mapping[str, JsonValue] | None = None,
        **inputs: JsonValue,
    ) -> WorkflowBuilder:
        """Append a step calling ``capability`` with (templated) ``inputs``.

        ``input_map`` holds inputs whose names collide with this method's own keywords
        (``retry``, ``timeout_s``...); keyword inputs are merged over it.
        """
        step: dict[str, Any] = {
            "id": id,
            "capability": capability,
            "inputs": {**(input_map or {}), **inputs},
            "description": description,
        }
        if retry is not None:
            step["retry"] = dict(retry)
        if timeout_s is not None:
            step["timeout_s"] = timeout_s
        if compensation is not None:
            step["compensation"] = dict(compensation)
        if on_failure is not None:
            step["on_failure"] = on_failure
        self._data["steps"].append(step)
        return self

    def build(self) -> WorkflowSpec:
        """The validated definition.

        Raises:
            WorkflowError: the definition is invalid (the message names the field).
        """
        try:
            return WorkflowSpec.model_validate(self._data)
        except PydanticValidationError as exc:
            problems = [
                ".".join(str(p) for p in e["loc"]) + f": {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
            raise WorkflowError(
                f"workflow {self._data['name']}: invalid definition: " + "; ".join(problems),
                workflow=str(self._data["name"]),
            ) from None


def workflow(
    name: str,
    *,
    version: str = "1",
    description: str | None = None,
    inputs: Mapping[str, str] | None = None,
    on_failure: Literal["compensate", "halt"] = "compensate",
) -> Callable[[Callable[[WorkflowBuilder], None]], WorkflowSpec]:
    """Turn a function that adds steps to a builder into a :class:`WorkflowSpec`.

    ``inputs`` maps input names to types (all required); use ``w.input(...)`` inside
    the function for defaults. The function's docstring becomes the description.

    Raises:
        WorkflowError: the resulting definition is invalid.
    """

    def wrap(define: Callable[[WorkflowBuilder], None]) -> WorkflowSpec:
        builder = WorkflowBuilder(
            name,
            version=version,
            description=description if description is not None else (define.__doc__ or "").strip(),
            on_failure=on_failure,
        )
        for key, kind in (inputs or {}).items():
            builder.input(key, kind)
        define(builder)
        return builder.build()

    return wrap
