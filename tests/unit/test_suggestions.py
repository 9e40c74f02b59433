"""Close-match hints come from the fields allowed where the unknown one was written."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Discriminator, Field, Tag

from aifr.suggestions import did_you_mean


class Inner(BaseModel):
    under: str | None = None
    in_: list[int] | None = Field(default=None, alias="in")


def _kind(value: object) -> str:
    return "operators" if isinstance(value, dict) else "equals"


class Outer(BaseModel):
    retry: Inner | None = None
    items: list[Inner] = []
    by_name: dict[
        str,
        Annotated[
            Annotated[str, Tag("equals")] | Annotated[Inner, Tag("operators")], Discriminator(_kind)
        ],
    ] = {}


def test_a_hint_is_taken_from_the_model_at_that_place() -> None:
    assert did_you_mean(Outer, ("retyr",)) == " (did you mean 'retry'?)"
    assert did_you_mean(Outer, ("retry", "undr")) == " (did you mean 'under'?)"
    assert did_you_mean(Outer, ("items", 3, "inn")) == " (did you mean 'in'?)"  # the alias
    assert did_you_mean(Outer, ("by_name", "p", "operators", "undr")) == " (did you mean 'under'?)"


def test_no_hint_when_nothing_allowed_there_is_close() -> None:
    assert did_you_mean(Outer, ("retry", "retyr")) == ""  # 'retry' is not allowed inside retry
    assert did_you_mean(Outer, ("xyzzy",)) == ""
    assert did_you_mean(Outer, ("nowhere", "undr")) == ""
    assert did_you_mean(Outer, ()) == ""
