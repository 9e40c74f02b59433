"""Routes a search to the repositories the principal may read, and merges the results.

The policy engine decides per repository: the router asks it about the search
capability with the input ``repo`` set to each candidate repository (the caller's own
principal, roles and delegation chain), so a rule such as
``when: {capability: knowledge.search, inputs: {repo: "hr-*"}}`` with ``DENY`` keeps
those repositories out of everyone's results. A repository that is denied, or that
would need an approval, is never searched; the explanation says which rule kept it out.
The decision is taken with :meth:`~aifr.policy.PolicyEngine.peek`, so one search does
not take one rate-limit token per repository.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aifr.capabilities import CapabilitySpec
from aifr.errors import ErrorCode, IngestError
from aifr.ingest.ports import ChunkIndex, Embedder, SearchHit
from aifr.policy import Decision, PolicyEngine, PolicyRequest

__all__ = [
    "PolicyRepoAccess",
    "RepoAccess",
    "RepoVerdict",
    "RepositoryRouter",
    "Routed",
    "explain_lines",
]


@dataclass(frozen=True, slots=True)
class RepoVerdict:
    """Whether one repository was searched, and the decision that said so."""

    repo: str
    searched: bool
    decision: str
    rule_id: str | None
    reason: str


class RepoAccess(Protocol):
    """Says whether a principal may read a repository."""

    def verdict(
        self,
        repo: str,
        *,
        principal: str,
        roles: frozenset[str],
        on_behalf_of: tuple[str, ...],
        inputs: Mapping[str, Any],
    ) -> RepoVerdict:
        """The decision for ``principal`` reading ``repo`` in a call with ``inputs``."""
        ...


class PolicyRepoAccess:
    """Repository access decided by the policy engine on ``spec`` with input ``repo``."""

    def __init__(self, policy: PolicyEngine, spec: CapabilitySpec) -> None:
        self._policy = policy
        self._spec = spec

    def verdict(
        self,
        repo: str,
        *,
        principal: str,
        roles: frozenset[str],
        on_behalf_of: tuple[str, ...],
        inputs: Mapping[str, Any],
    ) -> RepoVerdict:
        """ALLOW searches ``repo``; DENY and REQUIRE_APPROVAL keep it out."""
        decision = self._policy.peek(
            PolicyRequest(
                principal=principal,
                capability=self._spec,
                inputs={**inputs, "repo": repo},
                roles=roles,
                on_behalf_of=on_behalf_of,
            )
        )
        return RepoVerdict(
            repo,
            decision.decision is Decision.ALLOW,
            decision.decision.value,
            decision.rule_id,
            decision.reason,
        )


@dataclass(frozen=True, slots=True)
class Routed:
    """The merged hits and, per repository considered, why it was or was not searched."""

    hits: list[SearchHit]
    repos: list[RepoVerdict]


class RepositoryRouter:
    """Embeds a query once and searches the readable repositories of one index."""

    def __init__(self, index: ChunkIndex, embedder: Embedder, access: RepoAccess) -> None:
        self.index = index
        self.embedder = embedder
        self.access = access

    def search(
        self,
        query: str,
        *,
        principal: str,
        roles: frozenset[str] = frozenset(),
        on_behalf_of: tuple[str, ...] = (),
        repos: Sequence[str] | None = None,
        k: int = 10,
    ) -> Routed:
        """The best ``k`` hits over the repositories ``principal`` may read.

        Each repository is decided as the call itself would be had it named that
        repository (``query``, ``k`` and ``repo`` as inputs). A call that names one
        repository was decided on exactly that request before it ran, so there a
        REQUIRE_APPROVAL means the approval was given: the repository is searched.

        Raises:
            IngestError: ``ingest.repo_not_found`` when a named repository is not indexed.
        """
        known = self.index.repos()
        wanted = list(dict.fromkeys(repos)) if repos else known
        missing = [name for name in wanted if name not in known]
        if missing:
            raise IngestError(
                f"no indexed repository named {', '.join(map(repr, missing))} "
                f"(indexed: {', '.join(known) or 'none'})",
                code=ErrorCode.INGEST_REPO_NOT_FOUND,
                repos=list(missing),
            )
        inputs = {"query": query, "k": k}
        verdicts = [
            self.access.verdict(
                name, principal=principal, roles=roles, on_behalf_of=on_behalf_of, inputs=inputs
            )
            for name in wanted
        ]
        if repos and len(wanted) == 1 and verdicts[0].decision == Decision.REQUIRE_APPROVAL:
            verdicts[0] = replace(verdicts[0], searched=True, reason="approved for this call")
        readable = [v.repo for v in verdicts if v.searched]
        if not readable:
            return Routed([], verdicts)
        vector = self.embedder.embed([query])[0]
        return Routed(self.index.search(query, vector, repos=readable, k=k), verdicts)


def explain_lines(verdicts: Sequence[RepoVerdict]) -> Mapping[str, str]:
    """One line per repository: searched, or kept out by which rule and why."""
    return {
        v.repo: (
            "searched"
            if v.searched
            else f"not searched: {v.decision} by rule {v.rule_id or 'default'}: {v.reason}"
        )
        for v in verdicts
    }
