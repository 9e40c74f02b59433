"""The governed invocation pipeline (DESIGN.md part C): runtime, context, hooks, secrets."""

from aifr.invocation.approvals import ApprovalService, missing_for, request_digest
from aifr.invocation.circuit import CircuitBreakers, CircuitState
from aifr.invocation.context import (
    GlobalContext,
    Phase,
    RequestContext,
    current_request,
    new_id,
)
from aifr.invocation.events import EventBus, EventKind, LifecycleEvent, Observer
from aifr.invocation.execution import SyncExecution
from aifr.invocation.hooks import Hook, HookCall, HookRegistry, Hooks, HookScope, HookStage
from aifr.invocation.identity import check_principal
from aifr.invocation.options import CallOptions, Roles
from aifr.invocation.ports import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalStore,
    ApprovalUpdate,
    ApprovalVote,
    CircuitRecord,
    CircuitStore,
    IdempotencyRecord,
    IdempotencyStore,
    TokenRecord,
    TokenStore,
)
from aifr.invocation.result import HookFailure, Result, Status, Timing
from aifr.invocation.runtime import Runtime
from aifr.invocation.secret_refs import (
    SECRET_SCHEME,
    EnvSecretProvider,
    FileSecretProvider,
    KeyringSecretProvider,
    Redactor,
    SecretProvider,
    SecretResolver,
)
from aifr.invocation.tokens import TOKEN_PREFIX, TokenService, TokenUse, token_digest

__all__ = [
    "SECRET_SCHEME",
    "TOKEN_PREFIX",
    "ApprovalRecord",
    "ApprovalService",
    "ApprovalStatus",
    "ApprovalStore",
    "ApprovalUpdate",
    "ApprovalVote",
    "CallOptions",
    "CircuitBreakers",
    "CircuitRecord",
    "CircuitState",
    "CircuitStore",
    "EnvSecretProvider",
    "EventBus",
    "EventKind",
    "FileSecretProvider",
    "GlobalContext",
    "Hook",
    "HookCall",
    "HookFailure",
    "HookRegistry",
    "HookScope",
    "HookStage",
    "Hooks",
    "IdempotencyRecord",
    "IdempotencyStore",
    "KeyringSecretProvider",
    "LifecycleEvent",
    "Observer",
    "Phase",
    "Redactor",
    "RequestContext",
    "Result",
    "Roles",
    "Runtime",
    "SecretProvider",
    "SecretResolver",
    "Status",
    "SyncExecution",
    "Timing",
    "TokenRecord",
    "TokenService",
    "TokenStore",
    "TokenUse",
    "check_principal",
    "current_request",
    "new_id",
    "missing_for",
    "request_digest",
    "token_digest",
]
