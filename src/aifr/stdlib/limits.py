"""Input types and size refusals shared by the standard capabilities."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from aifr.errors import SandboxRefusalError

__all__ = ["Encoding", "Positive", "Seconds", "too_large"]

Encoding = Literal["utf-8", "ascii", "latin-1", "utf-16", "base64"]

Positive = Annotated[int, Field(gt=0)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]


def too_large(rule: str, path: str, size: int, limit: int) -> SandboxRefusalError:
    """The refusal (``rule``) for ``size`` bytes of ``path`` over ``limit``."""
    return SandboxRefusalError(
        f"{path!r}: {size} bytes is over the cap of {limit} bytes",
        rule=rule,
        path=path,
        size=size,
        limit=limit,
    )
