"""One governed call from a route: ``Runtime.invoke`` as the caller, answered as HTTP.

The findings and knowledge routes act through the same capabilities an MCP client or
the CLI invokes (``findings.list``, ``findings.triage``, ``knowledge.search``...), so
the policy decides, approvals apply and the ledger records each call, exactly once.
"""

from __future__ import annotations

from pydantic import JsonValue
from starlette.responses import JSONResponse, Response

from aifr.api.auth import Caller
from aifr.api.problems import problem_response
from aifr.app import App
from aifr.errors import ErrorCode
from aifr.invocation import CallOptions

__all__ = ["governed_call"]


async def governed_call(
    app: App, who: Caller, capability: str, inputs: dict[str, JsonValue]
) -> Response:
    """Invoke ``capability`` as ``who`` and answer as HTTP.

    200 with the capability's output; 202 with the result when an approval is pending;
    otherwise the problem document of the error, with the whole ``result`` beside it.
    """
    result = await app.runtime.ainvoke(
        capability, inputs, who.principal, CallOptions(roles=who.roles)
    )
    if result.error is None:
        return JSONResponse(result.output)
    body = result.to_dict()
    if result.error_code is ErrorCode.APPROVAL_REQUIRED:
        return JSONResponse(body, status_code=202)
    return problem_response(result.error, extra={"result": body})
