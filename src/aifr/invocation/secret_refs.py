"""``secret://NAME`` references, resolved only at execution and scrubbed everywhere else.

Inputs (and configuration values) may hold the string ``secret://NAME`` in place of a
secret. Validation, policy, approval digests and audit records all see the reference,
never the value. Just before the handler runs, a :class:`SecretResolver` asks its
providers (environment, a directory of files, the OS keyring) for each value; the
returned :class:`Redactor` then scrubs those values out of the handler's output, its
errors and anything logged, replacing them with ``[secret:NAME]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aifr.capabilities.secret_syntax import (
    SECRET_SCHEME,
    has_secret_refs,
    is_secret_ref,
    secret_names,
)
from aifr.errors import AifrError, ConfigError, ErrorCode

__all__ = [
    "SECRET_SCHEME",
    "EnvSecretProvider",
    "FileSecretProvider",
    "KeyringSecretProvider",
    "Redactor",
    "SecretProvider",
    "SecretResolver",
    "has_secret_refs",
    "secret_names",
]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


class SecretProvider(Protocol):
    """Looks up a secret by name; ``None`` when it does not hold that secret."""

    name: str

    def lookup(self, secret_name: str) -> str | None:
        """The secret's value, or ``None``."""
        ...


class EnvSecretProvider:
    """Secrets from an environment mapping (``secret://TOKEN`` reads ``prefix + TOKEN``).

    The mapping is injected (``os.environ`` from the composition root), so nothing
    below ``app`` reads the process environment itself.
    """

    name = "env"

    def __init__(self, environ: Mapping[str, str], *, prefix: str = "") -> None:
        self._environ = environ
        self._prefix = prefix

    def lookup(self, secret_name: str) -> str | None:
        """The variable's value, or ``None`` when unset."""
        return self._environ.get(self._prefix + secret_name)


class FileSecretProvider:
    """Secrets as files in one directory (``<directory>/<NAME>``, trailing newline dropped)."""

    name = "file"

    def __init__(self, directory: Path | str) -> None:
        self._directory = Path(directory)

    def lookup(self, secret_name: str) -> str | None:
        """The file's text, or ``None`` when there is no such file.

        Raises:
            ConfigError: the file exists but cannot be read.
        """
        path = self._directory / secret_name
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(
                f"secret {secret_name!r}: cannot read {path}: {exc.strerror}",
                code=ErrorCode.SECRET_NOT_FOUND,
                secret=secret_name,
            ) from None


class KeyringSecretProvider:
    """Secrets from the OS keyring (``keyring`` package, the ``keyring`` extra)."""

    name = "keyring"

    def __init__(self, service: str = "aifr") -> None:
        self._service = service

    def lookup(self, secret_name: str) -> str | None:
        """The keyring entry for (service, name), or ``None``.

        Raises:
            ConfigError: the ``keyring`` extra is not installed, or the keyring failed.
        """
        try:
            import keyring  # optional extra, imported where used
            from keyring.errors import KeyringError  # optional extra
        except ImportError:
            raise ConfigError(
                "secret provider 'keyring' needs the keyring extra: pip install 'aifr[keyring]'",
                code=ErrorCode.CONFIG_MISSING_EXTRA,
                extra="keyring",
            ) from None
        try:
            value: str | None = keyring.get_password(self._service, secret_name)
        except KeyringError as exc:
            raise ConfigError(
                f"secret {secret_name!r}: the OS keyring failed: {type(exc).__name__}",
                code=ErrorCode.SECRET_NOT_FOUND,
                secret=secret_name,
            ) from None
        return value


class Redactor:
    """Replaces resolved secret values in text and JSON-like values with ``[secret:NAME]``."""

    __slots__ = ("_pairs",)

    def __init__(self, resolved: Mapping[str, str] | None = None) -> None:
        # Longest values first, so a secret containing another is replaced whole.
        self._pairs = sorted(
            ((value, f"[secret:{name}]") for name, value in (resolved or {}).items() if value),
            key=lambda pair: -len(pair[0]),
        )

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret, marker in self._pairs:
            if secret in value:
                value = value.replace(secret, marker)
        return value

    def scrub(self, value: Any) -> Any:
        """A copy of a JSON-like value with secrets replaced in every string and key."""
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def error(self, error: AifrError) -> AifrError:
        """``error`` with its message and details scrubbed (same class and code)."""
        if not self._pairs:
            return error
        error.message = self.text(error.message)
        error.args = (error.message,)
        error.details = self.scrub(error.details)
        error.__cause__ = None
        error.__context__ = None
        error.__suppress_context__ = True
        return error


class SecretResolver:
    """Resolves ``secret://NAME`` references through providers, first hit wins."""

    def __init__(self, providers: Sequence[SecretProvider] = ()) -> None:
        self._providers = tuple(providers)

    @property
    def provider_names(self) -> list[str]:
        """The providers' names, in lookup order."""
        return [p.name for p in self._providers]

    def resolve(self, reference: str) -> str:
        """The value behind one ``secret://NAME`` reference.

        Raises:
            ConfigError: ``config.secret_not_found`` when the reference is malformed or
                no provider holds the secret (the message names it, never a value).
        """
        name = reference[len(SECRET_SCHEME) :] if reference.startswith(SECRET_SCHEME) else ""
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"malformed secret reference {reference[:60]!r}: expected secret://NAME",
                code=ErrorCode.SECRET_NOT_FOUND,
                reference=reference[:60],
            )
        for provider in self._providers:
            value = provider.lookup(name)
            if value is not None:
                return value
        raise ConfigError(
            f"secret {name!r} not found (providers tried: "
            f"{', '.join(self.provider_names) or 'none configured'})",
            code=ErrorCode.SECRET_NOT_FOUND,
            secret=name,
        )

    def resolve_all(self, value: Any) -> tuple[Any, Redactor]:
        """A copy of ``value`` with every reference replaced, and the redactor for them.

        Dicts, lists and tuples are walked; other objects are passed through untouched.

        Raises:
            ConfigError: a reference cannot be resolved.
        """
        resolved: dict[str, str] = {}

        def walk(item: Any) -> Any:
            if is_secret_ref(item):
                secret = self.resolve(item)
                resolved[item[len(SECRET_SCHEME) :]] = secret
                return secret
            if isinstance(item, Mapping):
                return {k: walk(v) for k, v in item.items()}
            if isinstance(item, list):
                return [walk(v) for v in item]
            if isinstance(item, tuple):
                return tuple(walk(v) for v in item)
            return item

        return walk(value), Redactor(resolved)
