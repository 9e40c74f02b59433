"""Canonical JSON and stable digests (the seeds' "Timescape" version fingerprint).

One canonical encoding serves every hash in aifr: capability fingerprints, approval
request digests and the audit chain. Changing it would change every stored hash.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any

__all__ = ["canonical_json", "digest", "handler_digest"]


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
"""Built once: ``json.dumps`` with options builds a new encoder on every call."""


def canonical_json(value: Any) -> str:
    """Encode ``value`` as sorted, compact, UTF-8 JSON; the input to every aifr hash.

    Raises:
        TypeError: ``value`` holds something JSON cannot encode.
        ValueError: ``value`` holds NaN or an infinity, or a container holds itself.
    """
    return _CANONICAL.encode(value)


def digest(value: Any) -> str:
    """SHA-256 hex digest of the canonical JSON encoding of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def handler_digest(handler: Callable[..., Any]) -> str:
    """Digest of a handler's source, so an edited handler gets a new fingerprint.

    Falls back to the compiled code object when the source is unavailable (a REPL or a
    frozen module), which still changes when the function body changes.
    """
    target = inspect.unwrap(handler)
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        source = repr(code.co_code) + repr(code.co_consts) if code else repr(target)
    qualname = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    return hashlib.sha256(f"{qualname}\n{source}".encode()).hexdigest()
