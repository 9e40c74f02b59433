"""The floor of any MCP gateway: a bare relay with no governance, for ``gateway_bench``.

A minimal MCP SDK low-level server on stdio that forwards ``tools/list`` and
``tools/call`` to one upstream over the SDK client, in the same event loop: no
validation, policy, approval, audit or limits. What a gateway costs beyond this is
what its governance costs; this much every second hop costs.

    python benchmarks/gateway_relay.py [--aifr-stdio] [--floor FULL|NORMAL] UPSTREAM_COMMAND [ARGS...]

``--aifr-stdio`` serves stdio with aifr's loop-driven pipe streams (what ``aifr mcp``
uses) instead of the SDK's ``stdio_server`` (thread hand-offs per line), so the floor
can be read with the same transport as the gateway.

``--floor SYNCHRONOUS`` (implies ``--aifr-stdio``) adds to each forwarded call what
durability alone costs: ``benchmarks.floor``'s minimal governed call (a dict lookup
for the decision, a hash-chained 17-column record, one SQLite commit at that
``synchronous`` level, so one fsync per call at FULL) in one pool thread, as aifr
appends its audit record off the loop. The floor of a gateway at the defaults'
durability.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.server.lowlevel import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.floor


async def _serve(command: list[str], *, aifr_stdio: bool, floor_sync: str | None) -> None:
    upstream = Client(StdioServerParameters(command=command[0], args=command[1:]), mode="legacy")
    durable: Any = None
    pool = concurrent.futures.ThreadPoolExecutor(1)
    if floor_sync is not None:
        from benchmarks.floor import LeanFloor

        home = Path(tempfile.mkdtemp(prefix="relay-floor-"))
        durable = LeanFloor(home / "floor.db", floor_sync)
    async with upstream:
        listed = await upstream.list_tools()

        async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=listed.tools)

        async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            result = await upstream.call_tool(params.name, params.arguments)
            if durable is not None:  # one durable audit-like record, off the loop
                await asyncio.get_running_loop().run_in_executor(pool, durable.call)
            return result

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
    if aifr_stdio:
        args = args[1:]
    floor_sync = None
    if args and args[0] == "--floor":
        floor_sync, args, aifr_stdio = args[1], args[2:], True
    anyio.run(lambda: _serve(args, aifr_stdio=aifr_stdio, floor_sync=floor_sync))


if __name__ == "__main__":
    main()
