"""The policy file format as pydantic models: the one source of its JSON Schema.

``policy.schema.json`` beside this module is generated from :class:`PolicyFile`
(``aifr policy schema`` prints it; a test keeps the file in sync), so editors validate
exactly what the loader accepts. Shorthands: a glob field takes one string or a list;
an input condition takes a scalar (``eq``), a list (``in``) or a mapping of operators.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag

__all__ = [
    "ApprovalDoc",
    "ConditionDoc",
    "InputConditionDoc",
    "PolicyFile",
    "RateLimitDoc",
    "RoleDoc",
    "RuleDoc",
    "WhenDoc",
    "policy_json_schema",
]

_STRICT = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

RiskName = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
OperationName = Literal["READ", "WRITE", "DELETE", "EXECUTE", "NETWORK"]
DecisionName = Literal["ALLOW", "DENY", "REQUIRE_APPROVAL"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$", max_length=200)]


def _not_empty(value: Any) -> Any:
    """Refuse an empty list, which matches nothing.

    A rule written with one (``capability: []``) would load and silently never apply.
    """
    if isinstance(value, list) and not value:
        raise ValueError("an empty list matches nothing: list at least one value or leave it out")
    return value


NonEmpty = AfterValidator(_not_empty)
Globs = Annotated[str | list[str], NonEmpty]
Scalar = str | int | float | bool | None


class ConditionDoc(BaseModel):
    """Operators on one input; all given must hold."""

    model_config = _STRICT

    eq: Any = None
    ne: Any = None
    in_: Annotated[list[Any], NonEmpty] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    lt: float | str | None = None
    le: float | str | None = None
    gt: float | str | None = None
    ge: float | str | None = None
    glob: str | None = None
    regex: str | None = None
    under: str | None = None
    not_under: str | None = None
    exists: bool | None = None


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "operators"
    if isinstance(value, list):
        return "one_of"
    return "equals"


InputConditionDoc = Annotated[
    Annotated[Scalar, Tag("equals")]
    | Annotated[list[Scalar], NonEmpty, Tag("one_of")]
    | Annotated[ConditionDoc, Tag("operators")],
    Discriminator(_condition_kind),
]


class WhenDoc(BaseModel):
    """When a rule applies; every field given must hold, an empty ``when`` always does."""

    model_config = _STRICT

    principal: Globs | None = None
    roles: Annotated[str | list[str], NonEmpty] | None = None
    capability: Globs | None = None
    operation: Annotated[OperationName | list[OperationName], NonEmpty] | None = None
    risk: Annotated[RiskName | list[RiskName], NonEmpty] | None = None
    risk_at_least: RiskName | None = None
    risk_at_most: RiskName | None = None
    tags: Annotated[str | list[str], NonEmpty] | None = None
    workflow: Globs | None = None
    on_behalf_of: Globs | None = None
    delegated: bool | None = None
    inputs: dict[str, InputConditionDoc] | None = None


class RuleDoc(BaseModel):
    """One rule; rules are tried in order and the first match decides."""

    model_config = _STRICT

    id: Name
    description: str = ""
    when: WhenDoc = WhenDoc()
    decision: DecisionName
    reason: str = ""
    approvers: list[Name] | None = None
    quorum: Annotated[int, Field(ge=1, le=100)] | None = None
    quorum_roles: dict[Name, Annotated[int, Field(ge=1, le=100)]] | None = None
    approval_ttl_s: Annotated[float, Field(gt=0)] | None = None


class RoleDoc(BaseModel):
    """A role: who holds it (principal globs, groups) and what it inherits."""

    model_config = _STRICT

    description: str = ""
    principals: list[str] = []
    groups: list[Name] = []
    inherits: list[Name] = []


class ApprovalDoc(BaseModel):
    """Who may approve a risk level, the quorum, and how long requests wait."""

    model_config = _STRICT

    risk: RiskName
    roles: Annotated[list[Name], Field(min_length=1)]
    quorum: Annotated[int, Field(ge=1, le=100)] = 1
    quorum_roles: dict[Name, Annotated[int, Field(ge=1, le=100)]] | None = None
    ttl_s: Annotated[float, Field(gt=0)] | None = None


class RateLimitDoc(BaseModel):
    """A token bucket per principal and capability for requests matching ``when``."""

    model_config = _STRICT

    name: Name
    when: WhenDoc = WhenDoc()
    limit: Annotated[int, Field(ge=1)]
    per_s: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=1)] | None = None


class SecretGrantDoc(BaseModel):
    """Which requests may carry ``secret://NAME`` references to the secrets ``names`` match.

    A reference no grant covers is denied: an agent cannot hand a secret to a capability
    (or as a principal) the policy did not name, so it cannot send it somewhere it chose.
    """

    model_config = _STRICT

    names: Annotated[str | list[str], Field(min_length=1)]
    when: WhenDoc = WhenDoc()
    description: str = ""


class PolicyFile(BaseModel):
    """One ``policies/*.yaml`` file; files load in name order and their rules concatenate."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="aifr policy file",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1]
    description: str = ""
    default: DecisionName | dict[RiskName, DecisionName] | None = None
    groups: dict[Name, list[str]] = {}
    roles: dict[Name, RoleDoc] = {}
    rules: list[RuleDoc] = []
    approvals: list[ApprovalDoc] = []
    rate_limits: list[RateLimitDoc] = []
    secrets: list[SecretGrantDoc] = []


def policy_json_schema() -> dict[str, JsonValue]:
    """The JSON Schema of a policy file (draft 2020-12)."""
    return PolicyFile.model_json_schema(by_alias=True)
