"""The speed goals of issue 21, each a ratio against a floor measured in the same run.

Every benchmark that measures one of them prints a verdict table (``ratio | goal |
verdict``) and writes the same table into its section of ``docs/benchmarks.md``, so a
reader sees at once which goals a run met. The ratios are only comparable within one
run: the hosts are shared and their fsync moves by 2x to 3x between minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Goal",
    "Verdict",
    "print_summary",
    "print_verdicts",
    "print_verdicts_only",
    "verdict_table",
]


@dataclass(frozen=True)
class Goal:
    """A ratio limit: ``at_most`` (lower is better) or ``at_least`` (higher is better)."""

    text: str
    limit: float
    at_least: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= self.limit if self.at_least else ratio <= self.limit

    @property
    def shown(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:.2f}x"


NOOP = Goal("a governed no-op / its CPython floor", 1.25)
STEP = Goal("a durable workflow step / its CPython floor", 1.5)
MCP_DEFAULTS = Goal("MCP stdio round trip at the defaults / its floor", 1.1)
MCP_NORMAL = Goal("MCP stdio round trip at NORMAL / the bare SDK server", 1.0)
THREADS = Goal("governed calls/s at 8 threads / the floor's at 8 threads", 1.0, at_least=True)


@dataclass(frozen=True)
class Verdict:
    """One measured ratio against its goal."""

    what: str
    ratio: float
    goal: Goal

    @property
    def word(self) -> str:
        return "met" if self.goal.met(self.ratio) else "not met"


def verdict_table(verdicts: list[Verdict]) -> list[str]:
    """Markdown lines: what was measured, the ratio, the goal and whether it is met."""
    lines = ["| goal (issue 21) | measured | ratio | goal | verdict |", "|---|---|---:|---:|---|"]
    lines += [
        f"| {v.goal.text} | {v.what} | {v.ratio:.2f}x | {v.goal.shown} | {v.word} |"
        for v in verdicts
    ]
    return lines


_REPORTED: list[Verdict] = []


def print_verdicts(verdicts: list[Verdict]) -> None:
    """The same table on stdout, aligned for a terminal (and kept for the summary)."""
    _REPORTED.extend(verdicts)
    print_verdicts_only(verdicts)


def print_summary() -> None:
    """Every verdict this run printed, once more at its end (``python -m benchmarks``)."""
    if not _REPORTED:
        return
    met = sum(1 for v in _REPORTED if v.word == "met")
    print(f"== speed goals: {met} of {len(_REPORTED)} met in this run", flush=True)
    print_verdicts_only(_REPORTED)


def print_verdicts_only(verdicts: list[Verdict]) -> None:
    """Print ``verdicts`` without keeping them."""
    for v in verdicts:
        print(
            f"  {v.goal.text:<58} {v.what:<34} {v.ratio:6.2f}x  goal {v.goal.shown:<8} {v.word}",
            flush=True,
        )
