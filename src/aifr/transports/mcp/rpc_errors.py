"""Clearer JSON-RPC errors for the requests the SDK refuses before any handler runs.

The SDK answers two different client mistakes with one opaque error, ``-32602
"Invalid request parameters"`` and an empty ``data``, so a client (or the person
debugging it) cannot tell what was wrong:

- a request other than ``ping`` before ``initialize``: the SDK keeps the code its
  older union validation produced, although nothing is wrong with the params. Here it
  is ``-32600`` (Invalid Request) saying the session is not initialized yet;
- params that do not match the method's schema (``tools/call`` with ``arguments``
  that are an array, a string or a number; a ``name`` that is not a string): still
  ``-32602``, now naming the first field at fault and what it should be.

:class:`RpcErrorMiddleware` sits on the low-level server's middleware chain, which sees
both failures raised out of the SDK's own checks, and changes only their wording and,
for the first, the code.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

__all__ = ["RpcErrorMiddleware", "invalid_params_message"]

_EXEMPT = frozenset({"initialize", "ping"})
"""Requests the SDK serves before the handshake."""


def invalid_params_message(method: str, exc: ValidationError) -> str:
    """``Invalid params for METHOD: FIELD: problem``, from the first error pydantic found.

    Only the location and pydantic's short message: the value itself is not echoed
    back, since it may be large or hold something the client should not see again in
    a log.
    """
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return f"Invalid params for {method}"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "params"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid params for {method}: {where}: {first['msg']}{more}"


class RpcErrorMiddleware:
    """Low-level server middleware: names what is wrong in the SDK's pre-handler refusals."""

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Run the rest of the chain; reword a pre-initialize or malformed-params refusal."""
        try:
            return await call_next(ctx)
        except ValidationError as exc:
            raise MCPError(
                code=types.INVALID_PARAMS, message=invalid_params_message(ctx.method, exc)
            ) from exc
        except MCPError as exc:
            if not self._is_before_initialize(ctx, exc):
                raise
            raise MCPError(
                code=types.INVALID_REQUEST,
                message=(
                    f"Invalid Request: {ctx.method} before initialize; a session starts with "
                    "an initialize request, then the notifications/initialized notification"
                ),
                data=ctx.method,
            ) from exc

    @staticmethod
    def _is_before_initialize(ctx: ServerRequestContext[Any, Any], exc: MCPError) -> bool:
        # The SDK's gate raises INVALID_PARAMS with empty data before any params are read;
        # a session that sent initialize has client_params, so the gate cannot be why.
        return (
            ctx.request_id is not None
            and ctx.method not in _EXEMPT
            and exc.error.code == types.INVALID_PARAMS
            and not exc.error.data
            and ctx.session.client_params is None
        )
