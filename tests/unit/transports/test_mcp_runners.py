"""Identity rules of the local transports and the lazy imports of ``aifr mcp``."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from aifr.errors import ErrorCode, TransportError
from aifr.transports.mcp import McpIdentity, UidPrincipals
from aifr.transports.mcp.runners import _listening_socket

FALLBACK = McpIdentity("mcp-client", frozenset({"agent"}), operator="alice")


def test_a_mapped_uid_acts_as_its_principal_with_the_configured_roles() -> None:
    rule = UidPrincipals(FALLBACK, {str(os.getuid()): "me"})
    assert rule.identity_for(os.getuid()) == McpIdentity("me", frozenset({"agent"}), "alice")


def test_a_user_name_maps_like_a_uid() -> None:
    name = pwd.getpwuid(os.getuid()).pw_name
    assert (
        UidPrincipals(FALLBACK, {name: "by-name"}).identity_for(os.getuid()).principal == "by-name"
    )


def test_an_unmapped_or_unknown_uid_gets_the_fallback() -> None:
    rule = UidPrincipals(FALLBACK, {"12345": "someone"})
    assert rule.identity_for(os.getuid()) == FALLBACK
    assert rule.identity_for(2_000_000_000) == FALLBACK


def test_the_cli_does_not_import_the_mcp_sdk_until_aifr_mcp_serves() -> None:
    probe = "import sys, aifr.cli.main; print(sorted(m for m in ('mcp', 'aifr.transports.mcp') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_port_out_of_range_is_a_transport_error_not_an_overflow() -> None:
    with pytest.raises(TransportError) as refused:
        _listening_socket("127.0.0.1", 99999)
    assert refused.value.code is ErrorCode.TRANSPORT_FAILED
    assert "0 (any free one) to 65535" in refused.value.message
