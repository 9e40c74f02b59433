"""Close-match hints for a misspelt field name in a validated document.

A policy file, a workflow file and ``aifr.toml`` are pydantic models with unknown
fields forbidden. Pydantic says only that a field is not permitted; a user who wrote
``capabilty`` wants to hear ``capability``. The hint is taken from the fields allowed in
that very place (found by walking the model's types along the error's location), so it
never names a field that would be unknown there too.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["did_you_mean"]


def did_you_mean(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """`` (did you mean 'x'?)`` for the unknown field at ``loc`` of ``model``, or ``""``."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], _fields_at(model, loc[:-1]), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names (as written in YAML) allowed at ``loc``; empty when unclear."""
    candidates: list[Any] = [model]
    for part in loc:
        candidates = [inner for c in candidates for inner in _step(c, part)]
    return sorted(
        {
            field.alias or name
            for c in candidates
            for m in _members(c)
            if isinstance(m, type) and issubclass(m, BaseModel)
            for name, field in m.model_fields.items()
        }
    )


def _members(annotation: Any) -> list[Any]:
    """``annotation`` with ``Annotated``, ``Optional`` and unions taken apart."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> list[Any]:
    """What a value of ``annotation`` holds under key or index ``part`` (unresolved types)."""
    found: list[Any] = []
    for member in _members(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            for name, field in member.model_fields.items():
                if part in (name, field.alias):
                    found.append(field.annotation)
        elif origin in (list, tuple, Sequence) and isinstance(part, int) and args:
            found.append(args[0])
        elif origin is dict and isinstance(part, str) and len(args) == 2:
            found.append(args[1])
    return found or _tagged(annotation, part)


def _tagged(annotation: Any, tag: str | int) -> list[Any]:
    """The members of a discriminated union whose ``Tag`` is ``tag`` (pydantic puts it in loc)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        if any(getattr(meta, "tag", None) == tag for meta in annotation.__metadata__):
            return [args[0]]
        return _tagged(args[0], tag)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in args for m in _tagged(arg, tag)]
    return []
