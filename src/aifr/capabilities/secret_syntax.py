"""The ``secret://NAME`` reference syntax, shared by policy and the runtime.

Policy grants secrets and the runtime resolves them; finding references is all this module does: whether a request may carry a secret is
the policy's question, and turning a reference into its value is the runtime's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SECRET_SCHEME", "has_secret_refs", "is_secret_ref", "secret_names"]

SECRET_SCHEME = "secret://"  # noqa: S105  # a URL scheme, not a secret
_SCALARS = frozenset({int, float, bool, type(None)})


def is_secret_ref(value: object) -> bool:
    """Whether ``value`` is itself a ``secret://`` reference."""
    return isinstance(value, str) and value.startswith(SECRET_SCHEME)


def has_secret_refs(value: Any) -> bool:
    """Whether ``value`` holds a ``secret://`` reference anywhere in dicts, lists or tuples.

    Every governed call asks this of its inputs, so the common shapes (a plain dict of
    scalars) are walked with a loop and exact type checks rather than generators.
    """
    kind = type(value)
    if kind is str:
        return value.startswith(SECRET_SCHEME)  # type: ignore[no-any-return]
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind in _SCALARS:
        return False
    elif isinstance(value, str):
        return value.startswith(SECRET_SCHEME)
    elif isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    for item in items:
        if type(item) in _SCALARS:
            continue
        if has_secret_refs(item):
            return True
    return False


def secret_names(value: Any) -> frozenset[str]:
    """The names of every ``secret://NAME`` reference in dicts, lists or tuples."""
    found: set[str] = set()

    def walk(item: Any) -> None:
        if isinstance(item, str):
            if item.startswith(SECRET_SCHEME):
                found.add(item[len(SECRET_SCHEME) :])
        elif isinstance(item, Mapping):
            for nested in item.values():
                walk(nested)
        elif isinstance(item, list | tuple):
            for nested in item:
                walk(nested)

    walk(value)
    return frozenset(found)
