"""The floor of any MCP gateway: a bare relay with no governance, for ``gateway_bench``.

A minimal MCP SDK low-level server on stdio that forwards ``tools/list`` and
``tools/call`` to one upstream over the SDK client, in the same event loop: no
validation, policy, approval, audit or limits. What a gateway costs beyond this is
what its governance costs; this much every second hop costs.

    python benchmarks/gateway_relay.py [--aifr-stdio] UPSTREAM_COMMAND [ARGS...]

``--aifr-stdio`` serves stdio with aifr's loop-driven pipe streams (what ``aifr mcp``
uses) instead of the SDK's ``stdio_server`` (thread hand-offs per line), so the floor
can be read with the same transport as the gateway.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.server.lowlevel import Server


async def _serve(command: list[str], *, aifr_stdio: bool) -> None:
    upstream = Client(StdioServerParameters(command=command[0], args=command[1:]), mode="legacy")
    async with upstream:
        listed = await upstream.list_tools()

        async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=listed.tools)

        async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await upstream.call_tool(params.name, params.arguments)

        server: Server[Any] = Server("relay", on_list_tools=list_tools, on_call_tool=call_tool)
        options = server.create_initialization_options()
        if aifr_stdio:
            from aifr.transports.mcp.stdio import stdio_streams

            async with stdio_streams() as (read, write):
                await server.run(read, write, options)
        else:
            from mcp.server.stdio import stdio_server

            async with stdio_server() as (read, write):
                await server.run(read, write, options)


def main() -> None:
    args = sys.argv[1:]
    aifr_stdio = bool(args) and args[0] == "--aifr-stdio"
    anyio.run(lambda: _serve(args[1:] if aifr_stdio else args, aifr_stdio=aifr_stdio))


if __name__ == "__main__":
    main()
