"""An in-memory OS keyring backend, installed for the length of one test.

Shared by tests/unit/invocation and tests/integration/invocation: the ``keyring``
package's own provider code runs, only the OS store behind it is swapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import keyring
from keyring.backend import KeyringBackend


class MemoryKeyring(KeyringBackend):
    """Passwords in a dict, keyed by (service, username)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


@contextmanager
def memory_keyring(service: str, passwords: dict[str, str]) -> Iterator[MemoryKeyring]:
    """Make ``passwords`` the OS keyring's entries for ``service`` until the block ends."""
    backend = MemoryKeyring()
    for name, value in passwords.items():
        backend.set_password(service, name, value)
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)
