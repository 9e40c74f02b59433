"""Capabilities of the demo project: a typed function becomes a governed capability."""

from typing import Annotated

from pydantic import BaseModel, Field

from aifr import capability


class Greeting(BaseModel):
    """What greet returns."""

    message: str
    length: int


@capability("demo.greet", operation="READ", risk="LOW", tags=["demo"])
def greet(
    name: Annotated[str, Field(min_length=1, max_length=64)], shout: bool = False
) -> Greeting:
    """Greet someone by name.

    Args:
        name: Who to greet.
        shout: Upper-case the greeting.
    """
    text = f"Hello, {name}!"
    text = text.upper() if shout else text
    return Greeting(message=text, length=len(text))


@capability(
    "demo.notes.append",
    operation="WRITE",
    risk="MEDIUM",
    compensation="demo.notes.truncate",
    tags=["demo"],
)
def append_note(note: Annotated[str, Field(max_length=500)]) -> int:
    """Append a note to the demo notebook; returns the new note count.

    Args:
        note: Text of the note.
    """
    return len(note)


@capability(
    "demo.notes.truncate",
    operation="DELETE",
    risk="HIGH",
    reversible=False,
    compensation="demo.notes.append",
    tags=["demo"],
)
def truncate_notes(keep: Annotated[int, Field(ge=0)] = 0) -> int:
    """Drop notes after the first ``keep``; compensates ``demo.notes.append``.

    Args:
        keep: How many notes to keep.
    """
    return keep
