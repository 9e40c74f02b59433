"""``PolicyEngine``: the gatekeeper's one entry point (DESIGN.md part B).

``decide`` answers ALLOW, DENY or REQUIRE_APPROVAL for a request with the rule that
matched and a reason, in microseconds (see :mod:`aifr.policy.index`). Then, in order:
a delegated request is decided for every principal of its chain and the most
restrictive answer wins; a REQUIRE_APPROVAL may be turned into ALLOW by a grant; and a
request that is not denied takes a token from each rate limit that applies to it.

The compiled policy is one attribute, swapped whole on reload, so a reader never sees
half a policy and a policy that fails to load never replaces the last good one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec, RiskLevel
from aifr.errors import AifrError, ApprovalError, PolicyError
from aifr.policy.approvers import authorize_approver, missing_votes
from aifr.policy.changes import ChangeListener, PolicyChange
from aifr.policy.decision import Decision, PolicyDecision, PolicyRequest
from aifr.policy.grants import Grant, new_grant_id
from aifr.policy.index import CompiledPolicy, view_of
from aifr.policy.loader import (
    Policy,
    compile_conditions,
    directory_signature,
    load_policy,
)
from aifr.policy.ports import GrantStore
from aifr.policy.ratelimit import RateLimit, RateLimiter
from aifr.policy.rules import GlobSet, InputCondition, glob_problem

__all__ = ["MAX_GRANT_TTL_S", "PolicyEngine"]

logger = logging.getLogger(__name__)

MAX_GRANT_TTL_S = 30 * 24 * 3600.0
_MAX_GRANT_MATCHERS = 10_000
Clock = Callable[[], float]
# Module constants: reading an enum member off its class costs more than a global.
_DENY = Decision.DENY
_REQUIRE_APPROVAL = Decision.REQUIRE_APPROVAL


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class PolicyEngine:
    """Decides requests against a compiled policy; thread-safe.

    Args:
        policy: the compiled policy to start with.
        directory: where the policy came from, for :meth:`reload` (``None``: fixed).
        grants: where grants are kept (``None``: grants are not used).
        known_capabilities: capability ids, for :meth:`lint`.
        clock: monotonic time for rate limits.
        wall_clock: epoch time for grant expiry.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        directory: Path | str | None = None,
        grants: GrantStore | None = None,
        known_capabilities: Iterable[str] | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._compiled = CompiledPolicy(policy or Policy())
        self.directory = Path(directory) if directory is not None else None
        self.grants = grants
        self.known_capabilities = (
            frozenset(known_capabilities) if known_capabilities is not None else None
        )
        self._limiter = RateLimiter(clock=clock)
        self._wall_clock = wall_clock
        self._grant_matchers: dict[str, tuple[GlobSet, tuple[InputCondition, ...]] | None] = {}
        self._signature = directory_signature(self.directory) if self.directory else ()
        self._reload_lock = threading.Lock()
        self._stop_watching: threading.Event | None = None
        self._listeners: list[ChangeListener] = []
        self.last_reload_error: PolicyError | None = None

    @classmethod
    def from_directory(
        cls,
        path: Path | str,
        *,
        grants: GrantStore | None = None,
        known_capabilities: Iterable[str] | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> PolicyEngine:
        """Load ``path``'s policy files (a missing folder means built-in defaults only).

        Raises:
            PolicyError: a file does not load; the message names file, line and field.
        """
        directory = Path(path)
        signature = directory_signature(directory)
        engine = cls(
            load_policy(directory),
            directory=directory,
            grants=grants,
            known_capabilities=known_capabilities,
            clock=clock,
            wall_clock=wall_clock,
        )
        engine._signature = signature
        return engine

    # -- state -------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._compiled.policy

    @property
    def compiled(self) -> CompiledPolicy:
        """The policy in force with its index (for explain, lint and tests)."""
        return self._compiled

    def replace_policy(self, policy: Policy) -> None:
        """Put ``policy`` in force (rate-limit buckets carry over)."""
        self._compiled = CompiledPolicy(policy)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every change that takes effect: reload, grant, revoke.

        Listeners run in the thread that made the change (the file watcher's for a hot
        reload); ``aifr.app`` uses one to audit each change as ``config.changed``.
        """
        self._listeners.append(listener)

    def _announce(self, change: PolicyChange) -> None:
        for listener in self._listeners:
            listener(change)

    def reload(self, *, actor: str = "system") -> None:
        """Load the directory again and put it in force; on failure keep the current policy.

        Raises:
            PolicyError: the new files do not load (the engine keeps its last good
                policy), or the engine was not built from a directory.
            AifrError: a change listener failed (the new policy is in force).
        """
        if self.directory is None:
            raise PolicyError("this policy engine was not loaded from a directory")
        with self._reload_lock:
            signature = directory_signature(self.directory)
            try:
                policy = load_policy(self.directory)
            except PolicyError as exc:
                self.last_reload_error = exc
                self._signature = signature
                raise
            self.replace_policy(policy)
            self._signature = signature
            self.last_reload_error = None
        logger.info("policy reloaded from %s (%d rules)", self.directory, len(policy.rules))
        self._announce(
            PolicyChange(
                key="policy",
                action="reloaded",
                actor=actor,
                details={
                    "directory": str(self.directory),
                    "files": [Path(name).name for name in policy.files],
                    "rules": len(policy.rules),
                    "digest": policy.digest,
                },
            )
        )

    def reload_if_changed(self) -> bool:
        """Reload when a policy file changed since the last load; True if a new policy is in force.

        A policy that fails to load is logged and kept out; the old one stays in force.
        """
        if self.directory is None or directory_signature(self.directory) == self._signature:
            return False
        try:
            self.reload()
        except PolicyError as exc:
            logger.error("policy reload failed, keeping the last good policy: %s", exc.message)
            return False
        except AifrError as exc:  # the policy is in force; only its announcement failed
            logger.error("policy reloaded, but a change listener failed: %s", exc.message)
        return True

    def start_watching(self, interval_s: float = 1.0) -> None:
        """Check the directory for changes every ``interval_s`` seconds in a daemon thread."""
        if self._stop_watching is not None:
            return
        stop = threading.Event()
        self._stop_watching = stop

        def watch() -> None:
            while not stop.wait(interval_s):
                self.reload_if_changed()

        threading.Thread(target=watch, name="aifr-policy-watch", daemon=True).start()

    def stop_watching(self) -> None:
        """Stop the thread :meth:`start_watching` started."""
        if self._stop_watching is not None:
            self._stop_watching.set()
            self._stop_watching = None

    # -- deciding ----------------------------------------------------------------------

    def roles_of(self, principal: str) -> frozenset[str]:
        """Every role ``principal`` holds through bindings, groups and inheritance."""
        return self._compiled.policy.rbac.roles_of(principal)

    def always_denies(
        self, capability: CapabilitySpec, principal: str, roles: frozenset[str] = frozenset()
    ) -> bool:
        """Whether every call of ``capability`` by ``principal`` is denied, whatever the inputs.

        True when each rule that may decide for this subject (the compiled plan's steps,
        input and workflow conditions aside) denies: no inputs can get the call through,
        and no grant turns a denial around. Lets ``tools/list`` leave such tools out.
        """
        steps, _limits = self._compiled.plan(capability, principal, roles, ())
        return all(decision.decision is _DENY for _test, decision in steps)

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Decide ``request``; a non-denied request takes a rate-limit token."""
        return self._decide(request, consume=True)

    def peek(self, request: PolicyRequest) -> PolicyDecision:
        """What :meth:`decide` would answer now, without taking a rate-limit token."""
        return self._decide(request, consume=False)

    def _decide(self, request: PolicyRequest, *, consume: bool) -> PolicyDecision:
        compiled = self._compiled
        if request.secrets:
            refused = self._ungranted_secret(compiled, request)
            if refused is not None:
                return refused
        plan = compiled.plan(
            request.capability, request.principal, request.roles, request.on_behalf_of
        )
        decision = compiled.evaluate(plan, request.inputs, request.workflow_id)
        if decision.decision is _DENY:
            return decision
        if request.on_behalf_of:
            decision = self._delegated(compiled, request, decision)
            if decision.decision is _DENY:
                return decision
        if decision.decision is _REQUIRE_APPROVAL and self.grants is not None:
            decision = self._granted(request, decision)
        rate_limits = plan[1]
        if rate_limits:
            return self._limited(request, decision, rate_limits, consume=consume)
        return decision

    @staticmethod
    def _ungranted_secret(
        compiled: CompiledPolicy, request: PolicyRequest
    ) -> PolicyDecision | None:
        """A denial naming the first secret some principal of the request is not granted.

        The caller and every link of its delegation chain need a grant of their own: a
        secret never reaches a capability on behalf of someone who could not send it.
        """
        policy = compiled.policy
        chain = request.on_behalf_of
        subjects = [(request.principal, compiled.effective_roles(request.principal, request.roles))]
        subjects += [(link, compiled.effective_roles(link, frozenset())) for link in chain]
        for name in sorted(request.secrets):
            for principal, roles in subjects:
                view = view_of(
                    request.capability, principal, roles, request.inputs, request.workflow_id, chain
                )
                if not any(grant.covers(name, view) for grant in policy.secret_grants):
                    return PolicyDecision(
                        Decision.DENY,
                        f"secret:{name}",
                        f"secret://{name} is not granted to {principal!r} for "
                        f"{request.capability.id}: no policy `secrets` entry covers it",
                    )
        return None

    def _limited(
        self,
        request: PolicyRequest,
        decision: PolicyDecision,
        rate_limits: tuple[RateLimit, ...],
        *,
        consume: bool,
    ) -> PolicyDecision:
        capability_id = request.capability.id
        for limit in rate_limits:
            if limit.when.has_context and not limit.when.context_matches(
                request.inputs, request.workflow_id
            ):
                continue
            if consume:
                taken = self._limiter.acquire(limit, request.principal, capability_id)
            else:
                taken = self._limiter.tokens(limit, request.principal, capability_id) >= 1.0
            if not taken:
                return PolicyDecision(Decision.DENY, f"rate_limit:{limit.name}", "rate_limited")
        return decision

    def _delegated(
        self, compiled: CompiledPolicy, request: PolicyRequest, decision: PolicyDecision
    ) -> PolicyDecision:
        # Effective rights never exceed the least-privileged link: the strictest wins.
        chain = request.on_behalf_of
        worst, worst_link = decision, None
        for link in chain:
            plan = compiled.plan(request.capability, link, frozenset(), chain)
            answer = compiled.evaluate(plan, request.inputs, request.workflow_id)
            if answer.decision.severity > worst.decision.severity:
                worst, worst_link = answer, link
        if worst_link is None:
            return decision
        path = " -> ".join((request.principal, *chain))
        return PolicyDecision(
            worst.decision,
            worst.rule_id,
            f"on behalf of {worst_link} (chain {path}): {worst.reason}",
            worst.approver_roles,
            worst.quorum,
            worst.approval_ttl_s,
            quorum_roles=worst.quorum_roles,
        )

    def _grant_matcher(self, grant: Grant) -> tuple[GlobSet, tuple[InputCondition, ...]] | None:
        if grant.id not in self._grant_matchers:
            if len(self._grant_matchers) >= _MAX_GRANT_MATCHERS:
                self._grant_matchers.clear()
            try:
                matcher: tuple[GlobSet, tuple[InputCondition, ...]] | None = (
                    GlobSet([grant.capability]),
                    compile_conditions(grant.constraints),
                )
            except PolicyError as exc:
                logger.error("grant %s has invalid constraints, ignored: %s", grant.id, exc)
                matcher = None
            self._grant_matchers[grant.id] = matcher
        return self._grant_matchers[grant.id]

    def _granted(self, request: PolicyRequest, decision: PolicyDecision) -> PolicyDecision:
        assert self.grants is not None  # noqa: S101  # checked by the caller
        for grant in self.grants.active_for(request.principal, self._wall_clock()):
            matcher = self._grant_matcher(grant)
            if matcher is None or not matcher[0].matches(request.capability.id):
                continue
            if not self._issuer_may_approve(grant, request, decision):
                continue
            if all(condition.matches(request.inputs) for condition in matcher[1]):
                return PolicyDecision(
                    Decision.ALLOW,
                    decision.rule_id,
                    f"allowed by grant {grant.id} from {grant.issued_by} (until "
                    f"{_iso(grant.expires_at)}) instead of: {decision.reason}",
                    grant_id=grant.id,
                )
        return decision

    def _issuer_may_approve(
        self, grant: Grant, request: PolicyRequest, decision: PolicyDecision
    ) -> bool:
        # A grant stands in for its issuer's approval, so it covers only the requests the
        # issuer could approve alone: a quorum of one and one of the decision's roles.
        if decision.quorum > 1:
            return False
        if decision.quorum_roles and missing_votes(
            [self.roles_of(grant.issued_by)], decision.quorum_roles, 1
        ):
            return False
        try:
            self.check_approver(
                approver=grant.issued_by,
                requester=request.principal,
                risk=request.capability.effective_risk,
                decision=decision,
            )
        except ApprovalError:
            return False
        return True

    def rate_limit_tokens(self, limit: RateLimit, principal: str, capability_id: str) -> float:
        """Tokens ``principal`` has left under ``limit`` for ``capability_id``."""
        return self._limiter.tokens(limit, principal, capability_id)

    # -- approvals and grants ----------------------------------------------------------

    def check_approver(
        self,
        *,
        approver: str,
        requester: str,
        risk: RiskLevel,
        decision: PolicyDecision,
        approver_roles: frozenset[str] = frozenset(),
    ) -> None:
        """Raise unless ``approver`` may approve ``requester``'s request.

        ``approver_roles`` adds roles the approver holds outside the policy's bindings
        (from an authenticated token, for instance).

        Raises:
            ApprovalError: ``approval.self_approval`` or ``approval.not_authorized``.
        """
        policy = self._compiled.policy
        authorize_approver(
            rbac=policy.rbac,
            table=policy.approvals,
            approver=approver,
            requester=requester,
            risk=risk,
            decision=decision,
            extra_roles=approver_roles,
        )

    def issue_grant(
        self,
        *,
        approver: str,
        principal: str,
        capability: str,
        risk: RiskLevel,
        ttl_s: float,
        constraints: Mapping[str, JsonValue] | None = None,
        reason: str = "",
        approver_roles: frozenset[str] = frozenset(),
    ) -> Grant:
        """Store a grant letting ``principal`` call ``capability`` (a glob) for ``ttl_s``.

        The approver must be allowed to approve ``risk`` requests of ``principal``.

        Raises:
            PolicyError: no grant store, a bad TTL, an invalid capability glob or
                invalid constraints.
            ApprovalError: the approver may not approve such requests.
            AifrError: a change listener failed (the grant is stored).
        """
        if self.grants is None:
            raise PolicyError("no grant store is configured for this policy engine")
        if not 0 < ttl_s <= MAX_GRANT_TTL_S:
            raise PolicyError(
                f"grant ttl_s must be in (0, {MAX_GRANT_TTL_S:.0f}], got {ttl_s}", ttl_s=ttl_s
            )
        problem = glob_problem(capability)
        if problem is not None:
            raise PolicyError(
                f"grant capability: invalid glob {capability!r}: {problem}",
                field="capability",
                capability=capability,
            )
        compile_conditions(constraints or {})
        self.check_approver(
            approver=approver,
            requester=principal,
            risk=risk,
            decision=PolicyDecision(Decision.REQUIRE_APPROVAL, None, "grant"),
            approver_roles=approver_roles,
        )
        now = self._wall_clock()
        grant = Grant(
            id=new_grant_id(),
            principal=principal,
            capability=capability,
            issued_by=approver,
            issued_at=now,
            expires_at=now + ttl_s,
            constraints=dict(constraints or {}),
            reason=reason,
        )
        self.grants.add(grant)
        logger.info("grant %s issued by %s to %s for %s", grant.id, approver, principal, capability)
        self._announce(PolicyChange("policy.grants", "issued", approver, grant.to_dict()))
        return grant

    def revoke_grant(self, grant_id: str, *, revoked_by: str) -> Grant:
        """Revoke a grant at once.

        Raises:
            PolicyError: no grant store, or ``policy.grant_not_found``.
            AifrError: a change listener failed (the grant is revoked).
        """
        if self.grants is None:
            raise PolicyError("no grant store is configured for this policy engine")
        grant = self.grants.revoke(grant_id, revoked_by=revoked_by, at=self._wall_clock())
        self._announce(PolicyChange("policy.grants", "revoked", revoked_by, grant.to_dict()))
        return grant
