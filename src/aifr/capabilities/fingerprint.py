"""Canonical JSON and stable digests (the seeds' "Timescape" version fingerprint).

One canonical encoding serves every hash in aifr: capability fingerprints, approval
request digests and the audit chain. Changing it would change every stored hash.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["canonical_json", "compact_encoder", "digest", "handler_digest"]


def compact_encoder(
    *, sort_keys: bool, ensure_ascii: bool, allow_nan: bool
) -> Callable[[Any], str]:
    """A compact JSON encoder (``","`` and ``":"``), built once and called per value.

    ``json.JSONEncoder(...).encode`` gives the same text, but each call builds the C
    encoder again around a fresh dict of the containers it is inside (its circular-
    reference check), about 0.65 µs of a 1 µs encode of a small value, and a workflow
    step encodes several. This keeps one C encoder (CPython's ``_json``; where there is
    none, the class's own ``encode``) and no such dict: a container that holds itself
    recurses until Python's limit instead, and that is raised as the ``ValueError`` the
    class raises for it.
    """
    fallback = json.JSONEncoder(
        sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan
    )
    make = getattr(json.encoder, "c_make_encoder", None)  # CPython's _json.make_encoder
    if make is None:  # no C accelerator (another Python): the class's own path
        return fallback.encode
    strings = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    chunks = make(None, fallback.default, strings, None, ":", ",", sort_keys, False, allow_nan)
    join = "".join

    def encode(value: Any) -> str:
        try:
            return join(chunks(value, 0))
        except RecursionError as exc:
            raise ValueError("Circular reference detected (or nested too deep)") from exc

    return encode


_CANONICAL = compact_encoder(sort_keys=True, ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Encode ``value`` as sorted, compact, UTF-8 JSON; the input to every aifr hash.

    Raises:
        TypeError: ``value`` holds something JSON cannot encode.
        ValueError: ``value`` holds NaN or an infinity, or a container holds itself.
    """
    return _CANONICAL(value)


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
