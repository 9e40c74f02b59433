"""``knowledge.search``: hybrid search over the ingested repositories the caller may read.

A READ capability at LOW risk like any other: policy-checked (the call as a whole, and
then each repository, see :mod:`aifr.ingest.router`), audited and served over MCP.
The index and the embedding model are opened on the first call, not when the
capability is built, so listing capabilities never loads torch or asks for the key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from aifr.capabilities import CallInfo, Capability, capability
from aifr.ingest import (
    ChunkIndex,
    Embedder,
    PolicyRepoAccess,
    RepositoryRouter,
    SearchHit,
    explain_lines,
)
from aifr.policy import PolicyEngine

__all__ = ["build_knowledge_capabilities"]

_SNIPPET_LINES = 12
_SNIPPET_CHARS = 800


class Hit(TypedDict):
    """One result: where it is, a snippet of the chunk, and how it ranked."""

    repo: str
    path: str
    start_line: int
    end_line: int
    language: str
    snippet: str
    score: float
    vector_rank: int | None
    keyword_rank: int | None


class RepoUse(TypedDict):
    """Whether one repository was searched, and the policy decision that said so."""

    repo: str
    searched: bool
    decision: str
    rule: str | None
    explain: str


class Found(TypedDict):
    """What ``knowledge.search`` returns."""

    hits: list[Hit]
    repos: list[RepoUse]


def snippet(text: str) -> str:
    """The first lines of a chunk, cut to a readable size."""
    lines = text.splitlines()[:_SNIPPET_LINES]
    cut = "\n".join(lines)
    return cut if len(cut) <= _SNIPPET_CHARS else cut[: _SNIPPET_CHARS - 1] + "…"


def _hit(hit: SearchHit) -> Hit:
    chunk = hit.chunk
    return Hit(
        repo=chunk.repo,
        path=chunk.path,
        start_line=chunk.start_line,
        end_line=chunk.end_line,
        language=chunk.language,
        snippet=snippet(chunk.text),
        score=round(hit.score, 6),
        vector_rank=hit.vector_rank,
        keyword_rank=hit.keyword_rank,
    )


def build_knowledge_capabilities(
    *,
    open_index: Callable[[], tuple[ChunkIndex, Embedder]],
    policy: Callable[[], PolicyEngine],
) -> list[Capability]:
    """The ``knowledge.search`` capability over the index ``open_index`` opens on first use.

    ``policy`` returns the engine that decides per repository (the composition root's,
    the same one that decided the call).
    """
    lock = threading.Lock()
    routers: list[RepositoryRouter] = []

    @capability(
        "knowledge.search",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "knowledge"),
        justification="reads sanitized chunks of ingested repositories the caller may read",
        # The first call in a process loads torch and the model: seconds on a quiet
        # machine, past the runtime's default 30 s on a busy one.
        timeout_s=300.0,
    )
    def search(
        query: Annotated[str, Field(min_length=1, max_length=2000)],
        call: CallInfo,
        repo: str | None = None,
        k: Annotated[int, Field(ge=1, le=100)] = 10,
    ) -> Found:
        """Search the ingested repositories by meaning and keywords (hybrid, fused by rank).

        Args:
            query: What to look for, in natural language or code words.
            call: Who is asking (filled in by the runtime).
            repo: Only this repository (default: every repository the caller may read).
            k: How many results to return.
        """
        with lock:
            if not routers:
                index, embedder = open_index()
                routers.append(
                    RepositoryRouter(index, embedder, PolicyRepoAccess(policy(), search.spec))
                )
        routed = routers[0].search(
            query,
            principal=call.principal,
            roles=call.roles,
            on_behalf_of=call.on_behalf_of,
            repos=[repo] if repo else None,
            k=k,
        )
        explained = explain_lines(routed.repos)
        return Found(
            hits=[_hit(h) for h in routed.hits],
            repos=[
                RepoUse(
                    repo=v.repo,
                    searched=v.searched,
                    decision=v.decision,
                    rule=v.rule_id,
                    explain=explained[v.repo],
                )
                for v in routed.repos
            ],
        )

    return [search]
