"""The sample aifr plugin: one capability that reaches nothing, one that reads under notes/.

aifr imports this module only when the plugin is enabled and its manifest
(``aifr-plugin.json`` beside this file) passed; then it calls the hook below once.
"""

from __future__ import annotations

from typing import cast

from typing_extensions import TypedDict

from aifr.capabilities import Capability, capability
from aifr.plugins import PluginHost

__all__ = ["register_capabilities"]


class Greeting(TypedDict):
    """What ``sample.greet`` returns."""

    greeting: str


class LineCount(TypedDict):
    """What ``sample.count_lines`` returns."""

    path: str
    lines: int
    words: int


def register_capabilities(host: PluginHost) -> list[Capability]:
    """The plugin's capabilities; ``host`` makes their calls to aifr, as this plugin."""

    @capability(
        "sample.greet",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("sample",),
        justification="computes a string; reads and changes nothing",
    )
    def greet(name: str) -> Greeting:
        """Greet someone by name.

        Args:
            name: Who to greet.
        """
        return Greeting(greeting=f"Hello, {name}!")

    @capability(
        "sample.count_lines",
        operation="READ",
        risk="LOW",
        idempotent=True,
        side_effect_scope="none",
        tags=("sample",),
        justification="reads one file through io.fs.read_file, under the plugin's fs root",
    )
    def count_lines(path: str) -> LineCount:
        """Count the lines and words of a text file under notes/.

        Args:
            path: The file, relative to the project (notes/...).
        """
        read = cast(dict[str, object], host.call("io.fs.read_file", {"path": path}))
        text = str(read["content"])
        return LineCount(path=path, lines=len(text.splitlines()), words=len(text.split()))

    return [greet, count_lines]
