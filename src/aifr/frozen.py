"""Frozen dataclasses built at half the cost, for the records every workflow step makes.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup and a
generic attribute set, about 60 ns a field here, where a mutable one's ``self.x = x``
costs about 8. A workflow step builds a dozen frozen records (its call's options and
policy request, the decision, the audit event and record, the step's row, the result
and its timing), about a hundred fields, and the sets held 6% of a step's samples. A slotted
class already holds one C descriptor per field, whose ``__set__`` writes the slot
directly, bypassing the class's ``__setattr__`` (the one that makes it frozen):
:func:`fast_init` replaces the generated ``__init__`` with one that calls those,
half the cost, and leaves everything else as ``@dataclass`` made it. Instances are as
frozen as before, compare, hash, print, copy, pickle and ``dataclasses.replace`` as
before, and the constructor takes the same arguments with the same defaults.

Only for ``@dataclass(frozen=True, slots=True)`` classes without ``InitVar`` fields
(their values go to ``__post_init__`` only, which the rewrite does not track); anything
else is refused when the class is defined, not when it is first built.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T")

_MISSING: Any = dataclasses.MISSING


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` an ``__init__`` that writes its slots directly.

    Apply it above ``@dataclass(frozen=True, slots=True)`` (which builds the slotted class
    this rewrites). The original ``__init__`` is kept as ``__dataclass_init__``, so a test
    can compare the two.

    Raises:
        TypeError: ``cls`` is not a frozen, slotted dataclass, or has ``InitVar`` fields.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init needs a @dataclass(frozen=True, slots=True); got {cls!r}")
    # An InitVar is a parameter of the dataclass's __init__ but no field: compare the two
    # (public API only, rather than dataclasses' private field kinds).
    given = list(inspect.signature(cls.__init__).parameters)[1:]
    if sorted(given) != sorted(f.name for f in dataclasses.fields(cls) if f.init):  # type: ignore[arg-type]
        raise TypeError(f"fast_init cannot rewrite {cls.__name__}: it has InitVar fields")
    init = _init_for(cls)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__dataclass_init__ = cls.__init__  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def _init_for(cls: type) -> Any:
    """Compile ``cls``'s ``__init__``: its parameters as the dataclass's, its body slot sets."""
    scope: dict[str, Any] = {"_MISSING": _MISSING}
    parameters: list[str] = []
    keyword_only: list[str] = []
    body: list[str] = []
    annotations: dict[str, Any] = {}
    for n, f in enumerate(dataclasses.fields(cls)):
        setter = f"_set{n}"
        scope[setter] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is not _MISSING:
            scope[f"_default{n}"] = f.default
        if f.default_factory is not _MISSING:
            scope[f"_factory{n}"] = f.default_factory
        if not f.init:  # not a parameter: set from its default, if it has one
            if f.default is not _MISSING:
                body.append(f"    {setter}(self, _default{n})")
            elif f.default_factory is not _MISSING:
                body.append(f"    {setter}(self, _factory{n}())")
            continue
        annotations[f.name] = f.type
        if f.default is not _MISSING:
            parameter = f"{f.name}=_default{n}"
            body.append(f"    {setter}(self, {f.name})")
        elif f.default_factory is not _MISSING:
            parameter = f"{f.name}=_MISSING"  # a fresh value per instance, as dataclasses do
            body.append(f"    {setter}(self, _factory{n}() if {f.name} is _MISSING else {f.name})")
        else:
            parameter = f.name
            body.append(f"    {setter}(self, {f.name})")
        (keyword_only if f.kw_only else parameters).append(parameter)
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *parameters, *(["*", *keyword_only] if keyword_only else [])])
    source = f"def __init__({signature}) -> None:\n" + "\n".join(body or ["    pass"])
    exec(source, scope)  # noqa: S102  # built from field names only, as dataclasses does
    init = scope["__init__"]
    init.__annotations__ = {**annotations, "return": None}
    return init
