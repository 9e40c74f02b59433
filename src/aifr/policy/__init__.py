"""The policy engine: YAML rules, RBAC, approvals, rate limits, grants (DESIGN.md part B)."""

from aifr.policy.approvers import ApprovalRule, ApprovalTable, Rbac, missing_votes
from aifr.policy.changes import ChangeListener, PolicyChange
from aifr.policy.decision import Decision, PolicyDecision, PolicyRequest
from aifr.policy.document import PolicyFile, policy_json_schema
from aifr.policy.engine import MAX_GRANT_TTL_S, PolicyEngine
from aifr.policy.grants import Grant, InMemoryGrantStore, grant_not_found, new_grant_id
from aifr.policy.index import CompiledPolicy, RuleIndex, first_match
from aifr.policy.loader import BUILTIN_DEFAULTS, Policy, load_policy, load_policy_text
from aifr.policy.ports import GrantStore
from aifr.policy.ratelimit import RateLimit, RateLimiter
from aifr.policy.rules import GlobSet, InputCondition, Match, RequestView, Rule, is_path_under

__all__ = [
    "BUILTIN_DEFAULTS",
    "MAX_GRANT_TTL_S",
    "ApprovalRule",
    "ApprovalTable",
    "ChangeListener",
    "CompiledPolicy",
    "Decision",
    "GlobSet",
    "Grant",
    "GrantStore",
    "InMemoryGrantStore",
    "InputCondition",
    "Match",
    "Policy",
    "PolicyDecision",
    "PolicyChange",
    "PolicyEngine",
    "PolicyFile",
    "PolicyRequest",
    "RateLimit",
    "RateLimiter",
    "Rbac",
    "missing_votes",
    "RequestView",
    "Rule",
    "RuleIndex",
    "first_match",
    "grant_not_found",
    "is_path_under",
    "load_policy",
    "load_policy_text",
    "new_grant_id",
    "policy_json_schema",
]
