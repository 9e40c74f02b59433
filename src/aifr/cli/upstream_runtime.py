"""Upstream MCP tools in every command that runs capabilities, not only ``aifr mcp``.

``aifr call``, ``aifr run`` and ``aifr worker`` attach the project's ``[[mcp.upstreams]]``
with :func:`attach_upstreams`: each upstream's tools are registered as
``<upstream>.<tool>`` capabilities (from the reviewed list, or, lacking one, when the
registry is first asked for one of its ids), the server starts on its first call, and
:func:`detach_upstreams` (also run at exit) stops it with the process. The MCP SDK is
imported only when upstreams are configured.
"""

from __future__ import annotations

import atexit
import sys
from typing import TYPE_CHECKING

from aifr.cli.console import err_console

if TYPE_CHECKING:
    from aifr.app import App
    from aifr.transports.mcp.gateway import Gateway

__all__ = ["attach_upstreams", "detach_upstreams"]


def attach_upstreams(app: App, *, command: str) -> Gateway | None:
    """Register the project's upstream tools in ``app``'s registry; ``None`` without any.

    Nothing starts here; an upstream that cannot be registered is reported on stderr
    and its tools are not served.
    """
    upstreams = app.settings.mcp.upstreams
    if not upstreams:
        return None
    from aifr.app import build_secrets
    from aifr.transports.mcp.gateway import Gateway

    gateway = Gateway(
        upstreams,
        build_secrets(app.settings).resolve,
        errlog=sys.stderr,
        catalog_dir=app.settings.state_path / "upstreams",
    )
    for failure in gateway.register(app.registry, lazy=True):
        err_console.print(f"aifr {command}: {failure} (its tools are not served)")
    atexit.register(gateway.close)
    return gateway


def detach_upstreams(gateway: Gateway | None) -> None:
    """Stop the upstreams ``attach_upstreams`` started (none: nothing to do)."""
    if gateway is not None:
        gateway.close()
        atexit.unregister(gateway.close)
