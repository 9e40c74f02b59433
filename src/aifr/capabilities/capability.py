"""A registered capability: its spec, its handler and the validators built for them.

The runtime calls ``validate_inputs`` and ``validate_output`` on every invocation, so
they are built once here rather than per call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, JsonValue, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticSerializationError

from aifr.capabilities.schema import (
    field_errors_from_pydantic,
    validate_against_schema,
)
from aifr.capabilities.spec import CapabilitySpec
from aifr.errors import FieldError, InputValidationError, OutputValidationError

__all__ = ["CallInfo", "Capability", "Handler"]

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Facts about the current call that a handler may ask for by annotating a parameter.

    A handler parameter annotated ``CallInfo`` is filled by the runtime and left out of
    the input schema. ``idempotency_key`` lets side-effecting handlers make a repeated
    call a no-op.
    """

    request_id: str
    principal: str
    idempotency_key: str | None = None
    trace_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    roles: frozenset[str] = frozenset()
    """The roles the caller presented (policy bindings add more; see ``PolicyEngine``)."""
    on_behalf_of: tuple[str, ...] = ()
    """The delegation chain, nearest delegator first, as the policy saw it."""


def _to_field_errors(items: list[dict[str, JsonValue]]) -> list[FieldError]:
    return [
        FieldError(
            path=str(i["path"]),
            code=str(i["code"]),
            message=str(i["message"]),
            expected=i["expected"],
            received=i["received"],
        )
        for i in items
    ]


@dataclass(frozen=True, slots=True, eq=False)
class Capability:
    """A spec bound to the handler that performs it.

    ``input_model`` (decorated functions) validates with pydantic; otherwise the spec's
    JSON ``input_schema`` is used. ``call_info_param`` names the parameter that receives
    the :class:`CallInfo`, if any.
    """

    spec: CapabilitySpec
    handler: Handler | None = None
    input_model: type[BaseModel] | None = None
    output_adapter: TypeAdapter[Any] | None = None
    call_info_param: str | None = None

    @property
    def id(self) -> str:
        """The capability id."""
        return self.spec.id

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function."""
        return self.handler is not None and inspect.iscoroutinefunction(self.handler)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly, without governance (for tests and composition)."""
        if self.handler is None:
            raise TypeError(f"capability {self.spec.id} has no handler")
        return self.handler(*args, **kwargs)

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``inputs`` and return the keyword arguments for the handler.

        Raises:
            InputValidationError: with one FieldError per problem.
        """
        if not isinstance(inputs, Mapping):
            raise InputValidationError(
                f"inputs for {self.spec.id} must be an object, got {type(inputs).__name__}",
                errors=[
                    FieldError(
                        path="",
                        code="type",
                        message="inputs must be an object",
                        expected="object",
                        received=type(inputs).__name__,
                    )
                ],
                capability_id=self.spec.id,
            )
        if self.input_model is not None:
            try:
                model = self.input_model.__pydantic_validator__.validate_python(
                    inputs if type(inputs) is dict else dict(inputs)
                )
            except PydanticValidationError as exc:
                raise self._input_error(field_errors_from_pydantic(exc)) from None
            # The instance's __dict__ holds exactly its declared fields (extras live
            # apart, in __pydantic_extra__): a copy, so the handler may change it.
            return dict(model.__dict__)
        problems = validate_against_schema(dict(inputs), self.spec.input_schema)
        if problems:
            raise self._input_error(problems)
        return dict(inputs)

    def as_validated(self, inputs: dict[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``inputs`` with each value given replaced by what the handler receives, as JSON.

        Validation coerces (``"5000"`` becomes ``5000.0``, ``"true"`` becomes ``True``), so
        the policy must judge the validated values, or a rule such as ``amount: {gt: 1000}``
        would miss a string the handler then receives as a number. Inputs left out stay
        out, so ``exists: false`` still means "not given".
        """
        if self.input_model is None:
            return inputs  # checked against the schema, not coerced
        view = inputs
        for name, value in kwargs.items():
            if name in inputs and value is not inputs[name]:
                if view is inputs:
                    view = dict(inputs)
                try:
                    view[name] = _ANY_ADAPTER.dump_python(value, mode="json")
                except (PydanticSerializationError, UnicodeDecodeError):
                    continue  # no JSON form: the policy sees the value as given
        return view

    def validate_output(self, value: Any) -> JsonValue:
        """Check a handler's result and return its JSON form.

        Raises:
            OutputValidationError: the result does not match the output schema.
        """
        if self.output_adapter is not None:
            try:
                checked = self.output_adapter.validate_python(value)
            except PydanticValidationError as exc:
                raise self._output_error(field_errors_from_pydantic(exc)) from None
            return self._as_json(self.output_adapter, checked)
        plain = self._as_json(_ANY_ADAPTER, value)
        if self.spec.output_schema is not None:
            problems = validate_against_schema(plain, self.spec.output_schema)
            if problems:
                raise self._output_error(problems)
        return plain

    def _as_json(self, adapter: TypeAdapter[Any], value: Any) -> JsonValue:
        """``value`` as JSON data, or an output error saying what JSON cannot carry.

        Bytes that are not UTF-8 and objects of no JSON shape fail here, not as a bare
        ``UnicodeDecodeError`` or serialization error escaping the pipeline.
        """
        try:
            result: JsonValue = adapter.dump_python(value, mode="json")
        except ValueError as exc:  # PydanticSerializationError, UnicodeDecodeError
            reason = (
                "bytes that are not UTF-8 text (return text, or base64 of the bytes)"
                if isinstance(exc, UnicodeDecodeError) or "utf-8" in str(exc).lower()
                else str(exc)
            )
            raise self._output_error(
                [
                    FieldError(
                        path="",
                        code="type",
                        message=f"the result cannot be sent as JSON: {reason}",
                        expected="JSON data",
                        received=type(value).__name__,
                    )
                ]
            ) from None
        return result

    def _input_error(self, problems: list[dict[str, JsonValue]]) -> InputValidationError:
        fields = ", ".join(f"{p['path'] or '<root>'} ({p['code']})" for p in problems)
        return InputValidationError(
            f"invalid inputs for {self.spec.id}: {fields}",
            errors=_to_field_errors(problems),
            capability_id=self.spec.id,
        )

    def _output_error(self, problems: list[dict[str, JsonValue]]) -> OutputValidationError:
        fields = ", ".join(f"{p['path'] or '<root>'} ({p['code']})" for p in problems)
        return OutputValidationError(
            f"output of {self.spec.id} does not match its schema: {fields}",
            errors=_to_field_errors(problems),
            capability_id=self.spec.id,
        )


_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)
