"""``@capability``: turn a typed Python function into a governed capability.

The input schema comes from the signature's type hints, descriptions from the Google
or reST docstring, the output schema from the return annotation, and the fingerprint
from the spec plus the handler's source (seed 002's handler manifest generation).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic.errors import PydanticUserError

from aifr.capabilities.capability import CallInfo, Capability, Handler
from aifr.capabilities.fingerprint import handler_digest
from aifr.capabilities.risk import OperationType, RiskLevel
from aifr.capabilities.spec import CapabilitySpec, Compensation, Risk, SideEffects
from aifr.errors import CapabilityError

__all__ = ["build_capability", "capability"]

_NO_OUTPUT = (inspect.Signature.empty, None, type(None), Any)


def capability(
    id: str,  # noqa: A002  # "id" is the spec's field name everywhere else
    *,
    operation: OperationType | str,
    risk: RiskLevel | str | None = None,
    version: str = "1",
    name: str = "",
    description: str | None = None,
    reversible: bool = True,
    side_effect_scope: str = "none",
    side_effect_description: str = "",
    compensation: Compensation | str | None = None,
    justification: str = "",
    requires_approval: bool = False,
    idempotent: bool = False,
    tags: Iterable[str] = (),
    timeout_s: float | None = None,
) -> Callable[[Handler], Capability]:
    """Decorate a function as a capability.

    ``compensation`` may be a :class:`Compensation` or the id of the capability that
    undoes this one. ``risk=None`` leaves risk undeclared, which aifr treats as HIGH.
    ``timeout_s`` declares the handler's timeout and asks for a hard one (the handler
    runs in the handler pool and is cut off at it, under the default
    ``runtime.sync_execution = "auto"``); without it the runtime's default timeout
    applies and is checked when the handler returns.

    Raises:
        CapabilityError: the function cannot be described (``*args``, bad annotations),
            or ``requires_approval``/``justification`` are given without a ``risk``.
        RiskConsistencyError: the declared risk is too low for the declared effects.
    """
    if risk is None and (requires_approval or justification):
        # Both live on the declared Risk; dropping them silently would lose an approval.
        given = "requires_approval=True" if requires_approval else "a justification"
        raise CapabilityError(
            f"capability {id}: {given} needs a declared risk level (risk=...); "
            "without one the risk is undeclared and treated as HIGH",
            capability_id=id,
        )

    def wrap(func: Handler) -> Capability:
        return build_capability(
            func,
            id=id,
            operation=OperationType(operation),
            risk=None
            if risk is None
            else Risk(
                level=RiskLevel(risk),
                justification=justification,
                requires_approval=requires_approval,
            ),
            version=version,
            name=name,
            description=description,
            side_effects=SideEffects(
                reversible=reversible,
                scope=side_effect_scope,
                description=side_effect_description,
            ),
            compensation=_compensation(compensation),
            idempotent=idempotent,
            tags=tuple(tags),
            timeout_s=timeout_s,
        )

    return wrap


def _compensation(value: Compensation | str | None) -> Compensation:
    if value is None:
        return Compensation()
    if isinstance(value, Compensation):
        return value
    return Compensation(supported=True, strategy="capability", capability_id=value)


def build_capability(
    func: Handler,
    *,
    id: str,  # noqa: A002  # mirrors CapabilitySpec.id
    operation: OperationType,
    risk: Risk | None,
    version: str,
    name: str,
    description: str | None,
    side_effects: SideEffects,
    compensation: Compensation,
    idempotent: bool,
    tags: tuple[str, ...],
    timeout_s: float | None,
) -> Capability:
    """Build a :class:`Capability` from a function and explicit spec parts."""
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    param_docs = {p.arg_name: (p.description or "") for p in doc.params}
    hints = _type_hints(func, id)
    input_model, input_schema, call_info_param = _input_model(func, id, hints, param_docs)
    output_adapter, output_schema = _output(func, id, hints)
    summary = " ".join(filter(None, [doc.short_description, doc.long_description]))
    spec = CapabilitySpec(
        id=id,
        name=name,
        description=description if description is not None else summary,
        version=version,
        input_schema=input_schema,
        output_schema=output_schema,
        operation_type=operation,
        side_effects=side_effects,
        compensation=compensation,
        risk=risk,
        idempotent=idempotent,
        tags=tags,
        handler_digest=handler_digest(func),
        # Only a declared timeout is set: the runtime tells it from its default.
        **({} if timeout_s is None else {"timeout_s": timeout_s}),
    )
    return Capability(
        spec=spec,
        handler=func,
        input_model=input_model,
        output_adapter=output_adapter,
        call_info_param=call_info_param,
    )


def _type_hints(func: Handler, capability_id: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise CapabilityError(
            f"capability {capability_id}: cannot resolve the type hints of "
            f"{func.__qualname__}: {exc}",
            capability_id=capability_id,
        ) from exc


def _input_model(
    func: Handler, capability_id: str, hints: dict[str, Any], param_docs: dict[str, str]
) -> tuple[type[BaseModel], dict[str, Any], str | None]:
    """The input model, its JSON Schema and the parameter that takes the ``CallInfo``."""
    fields: dict[str, Any] = {}
    call_info_param: str | None = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise CapabilityError(
                f"capability {capability_id}: parameter {param.name!r} of "
                f"{func.__qualname__} must be a plain named parameter (no *args, **kwargs "
                "or positional-only)",
                capability_id=capability_id,
                parameter=param.name,
            )
        annotation = hints.get(param.name, Any)
        if annotation is CallInfo:
            call_info_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (
            annotation,
            Field(default, description=param_docs.get(param.name) or None),
        )
    model_name = (
        "".join(part.title() for part in capability_id.replace("-", "_").split(".")) + "Input"
    )
    try:
        model = create_model(
            model_name,
            # NaN and infinity are no JSON: refused here, they would reach the handler,
            # and the audit digest would take them for null.
            __config__=ConfigDict(
                extra="forbid", arbitrary_types_allowed=False, allow_inf_nan=False
            ),
            **fields,
        )
        schema = model.model_json_schema()
    except (PydanticUserError, TypeError) as exc:
        raise CapabilityError(
            f"capability {capability_id}: cannot build an input schema for "
            f"{func.__qualname__}: {exc}",
            capability_id=capability_id,
        ) from exc
    return model, schema, call_info_param


def _output(
    func: Handler, capability_id: str, hints: dict[str, Any]
) -> tuple[TypeAdapter[Any] | None, dict[str, Any] | None]:
    annotation = hints.get("return", inspect.Signature.empty)
    if annotation in _NO_OUTPUT:
        return None, None
    if typing.get_origin(annotation) in (typing.Awaitable, typing.Coroutine):
        annotation = typing.get_args(annotation)[-1]
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        return adapter, adapter.json_schema()
    except (PydanticUserError, TypeError) as exc:
        raise CapabilityError(
            f"capability {capability_id}: cannot build an output schema from the return "
            f"annotation of {func.__qualname__}: {exc}",
            capability_id=capability_id,
        ) from exc
