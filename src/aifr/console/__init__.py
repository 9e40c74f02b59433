"""The web console at ``/console``: approvals inbox, runs and the audit trail, server-rendered."""

from aifr.console.routes import CONSOLE_PREFIX, install_console

__all__ = ["CONSOLE_PREFIX", "install_console"]
