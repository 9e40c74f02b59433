"""The REST API of ``aifr serve`` (DESIGN.md part I): FastAPI behind one token guard."""

from aifr.api.auth import OPERATIONS, ApiGuard, Caller, authorize
from aifr.api.factory import create_api, serve_api
from aifr.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from aifr.api.tls import TLS13_SUITES, harden, server_context, write_dev_certificate

__all__ = [
    "OPERATIONS",
    "PROBLEM_MEDIA_TYPE",
    "TLS13_SUITES",
    "ApiGuard",
    "Caller",
    "authorize",
    "create_api",
    "harden",
    "problem_body",
    "serve_api",
    "server_context",
    "write_dev_certificate",
]
