"""The composition root: Settings -> adapters -> capabilities -> the objects a command needs.

Nothing else in aifr picks adapters or reads settings; everything below takes plain
constructor arguments (principle 4: explicit injection, no hidden globals).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType

from aifr import __version__
from aifr.audit import AuditEvent, AuditLedger
from aifr.capabilities import Capability, CapabilityRegistry
from aifr.config import CONFIG_FILE_NAME, Settings, load_settings
from aifr.errors import AifrError, ConfigError
from aifr.invocation import (
    ApprovalService,
    EnvSecretProvider,
    FileSecretProvider,
    GlobalContext,
    KeyringSecretProvider,
    Runtime,
    SecretProvider,
    SecretResolver,
    TokenService,
)
from aifr.plugins import PluginSet, discover, load_plugins
from aifr.policy import GrantStore, PolicyChange, PolicyEngine
from aifr.stdlib import PermissionTable, build_stdlib
from aifr.storage.postgres.audit import open_postgres_ledger
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import SqliteApprovalStore
from aifr.storage.sqlite.audit import open_sqlite_ledger
from aifr.storage.sqlite.circuits import SqliteCircuitStore
from aifr.storage.sqlite.grants import SqliteGrantStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.storage.sqlite.tokens import SqliteTokenStore
from aifr.workflows import WorkflowEngine, WorkflowSpec, find_workflow

__all__ = [
    "App",
    "build_app",
    "build_audit_ledger",
    "build_grant_store",
    "build_plugins",
    "build_policy",
    "build_registry",
    "build_registry_and_plugins",
    "build_secrets",
    "build_token_service",
    "capabilities_in_module",
    "reserved_paths",
    "stdlib_capabilities",
]


@dataclass(frozen=True)
class App:
    """What the CLI and servers work with for one project.

    The state database and what is built on it (ledger, approvals, runtime) are
    created on first use; call :meth:`close` when done.
    """

    settings: Settings
    registry: CapabilityRegistry
    policy: PolicyEngine
    plugins: PluginSet = field(default_factory=PluginSet)

    @cached_property
    def database(self) -> SqliteDatabase:
        """The project's state database (``database_url`` must be ``sqlite:///PATH``).

        Raises:
            ConfigError: the URL names another backend.
        """
        path = self.settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {self.settings.database_url!r}: the state database has only "
                "a SQLite adapter so far; use sqlite:///PATH",
                key="database_url",
            )
        return SqliteDatabase(path, synchronous=self.settings.audit.synchronous)

    @cached_property
    def ledger(self) -> AuditLedger:
        """The audit ledger in the state database."""
        return open_sqlite_ledger(self.database)

    @cached_property
    def approvals(self) -> ApprovalService:
        """Durable approval requests, decided under the policy's approver rules."""
        return ApprovalService(
            SqliteApprovalStore(self.database, self.ledger),
            self.policy,
            default_ttl_s=self.settings.approvals.expiry_s,
            require_authenticated=self.settings.approvals.require_authenticated,
            audit=self.ledger.append,
        )

    @cached_property
    def runtime(self) -> Runtime:
        """The governed runtime: registry, policy, approvals, audit, limits, secrets."""
        limits = self.settings.runtime
        runtime = Runtime(
            self.registry,
            self.policy,
            self.ledger,
            approvals=self.approvals,
            idempotency=StepResultStore(
                self.runs, SqliteIdempotencyStore(self.database, self.ledger)
            ),
            circuit_store=SqliteCircuitStore(self.database),
            secrets=build_secrets(self.settings),
            global_context=GlobalContext(config=self.settings.model_dump(mode="json")),
            default_timeout_s=limits.default_timeout_s,
            circuit_failure_threshold=limits.circuit_failure_threshold,
            circuit_cooldown_s=limits.circuit_cooldown_s,
            sync_execution=limits.sync_execution,
        )
        self.plugins.attach(runtime)  # a plugin's calls go through this runtime
        return runtime

    @cached_property
    def tokens(self) -> TokenService:
        """The bearer tokens of every HTTP surface, in the state database."""
        return build_token_service(self.settings, self.database)

    @cached_property
    def runs(self) -> SqliteRunStore:
        """Workflow runs, steps, leases and the notification outbox."""
        return SqliteRunStore(self.database, self.ledger)

    @cached_property
    def workflows(self) -> WorkflowEngine:
        """The durable workflow engine on the governed runtime (nothing runs until asked)."""
        approvals = self.settings.approvals
        return WorkflowEngine(
            self.runtime,
            self.runs,
            on_fingerprint_drift=self.settings.workflows.on_fingerprint_drift,
            webhook_url=approvals.webhook_url,
        )

    def workflow(self, name_or_path: str) -> WorkflowSpec:
        """A workflow by file path, or by name from ``workflows.directory``.

        Raises:
            WorkflowError: ``workflow.not_found``, or the file is invalid.
        """
        return find_workflow(self.settings.path(self.settings.workflows.directory), name_or_path)

    def audit_policy_change(self, change: PolicyChange) -> None:
        """Record a policy reload or a grant issued or revoked as ``config.changed``.

        Raises:
            AifrError: the ledger could not be written.
        """
        self.ledger.append(
            AuditEvent(
                kind="config.changed",
                principal=change.actor,
                outcome="ok",
                details={"key": change.key, "action": change.action, **change.details},
            )
        )

    def close(self) -> None:
        """Stop the runtime and close the state database, if they were started."""
        built = vars(self)
        if "runtime" in built:
            self.runtime.close()
        if "database" in built:
            self.database.close()


def build_secrets(settings: Settings) -> SecretResolver:
    """The ``secret://`` resolver configured by the ``secrets`` settings, in order."""
    providers: list[SecretProvider] = []
    for name in settings.secrets.providers:
        if name == "env":
            providers.append(EnvSecretProvider(os.environ, prefix=settings.secrets.env_prefix))
        elif name == "file":
            providers.append(FileSecretProvider(settings.path(settings.secrets.directory)))
        else:
            providers.append(KeyringSecretProvider(settings.secrets.keyring_service))
    return SecretResolver(providers)


@contextmanager
def _project_on_path(project_dir: Path) -> Iterator[None]:
    entry = str(project_dir)
    added = entry not in sys.path
    if added:
        # Last, not first: a file an agent wrote into the project (``requests.py``) must
        # not shadow a package a capability module imports.
        sys.path.append(entry)
    try:
        yield
    finally:
        if added:
            sys.path.remove(entry)


def capabilities_in_module(module: ModuleType) -> list[Capability]:
    """Every :class:`Capability` a module defines at top level, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, Capability)]


def _import_project_module(name: str, project_dir: Path) -> ModuleType:
    with _project_on_path(project_dir):
        try:
            return importlib.import_module(name)
        except AifrError:
            raise
        except Exception as exc:  # user code may fail in any way; report it as config
            raise ConfigError(
                f"runtime.capability_modules: cannot import {name!r} from {project_dir}: "
                f"{type(exc).__name__}: {exc}",
                module=name,
            ) from exc


def stdlib_capabilities(
    settings: Settings, permissions: PermissionTable | None = None
) -> list[Capability]:
    """The standard library (``io.fs``, ``io.net``, ``data``, ``sys``) configured by ``settings``.

    ``permissions`` narrows plugins' principals to what their manifests asked for.
    """
    fs, net, run = settings.fs, settings.net, settings.exec
    return build_stdlib(
        project_dir=settings.project_dir.resolve(),
        state_dir=settings.state_path,
        fs_roots=[settings.path(root) for root in fs.roots],
        max_read_bytes=fs.max_read_bytes,
        max_write_bytes=fs.max_write_bytes,
        net_allow_hosts=net.allow_hosts,
        net_allow_schemes=net.allow_schemes,
        net_allow_private=net.allow_private_addresses,
        net_timeout_s=net.timeout_s,
        net_max_response_bytes=net.max_response_bytes,
        exec_allow_commands=run.allow_commands,
        exec_timeout_s=run.timeout_s,
        exec_max_memory_mb=run.max_memory_mb,
        exec_max_output_bytes=run.max_output_bytes,
        environ=os.environ,
        reserved=reserved_paths(settings),
        permissions=permissions,
    )


def reserved_paths(settings: Settings) -> list[Path]:
    """What an agent's ``io.fs`` / ``sys.exec`` calls may never touch, even inside a root.

    Everything that governs or becomes the runtime: the configuration, policies,
    workflow definitions, secrets and the audit signing key (``.aifr/`` is reserved by
    the stdlib itself), and the code it imports at the next start: each capability
    module's top-level module or package in the project folder, and that folder's
    bytecode cache (a forged ``.pyc`` would run instead of its source).
    """
    project = settings.project_dir.resolve()
    paths = [
        project / CONFIG_FILE_NAME,
        settings.path(settings.policy.directory),
        settings.path(settings.workflows.directory),
        settings.path(settings.secrets.directory),
        settings.path(settings.audit.signing_key_file),
        project / "__pycache__",
    ]
    for name in settings.runtime.capability_modules:
        top = name.split(".", 1)[0]
        paths += [project / f"{top}.py", project / top]
    return paths


def build_registry(settings: Settings) -> CapabilityRegistry:
    """A registry holding the stdlib, the project's capability modules and enabled plugins.

    Raises:
        ConfigError: a configured module cannot be imported.
        CapabilityError: a capability is invalid or registered twice.
    """
    return build_registry_and_plugins(settings)[0]


def build_registry_and_plugins(
    settings: Settings, *, report_all_plugins: bool = False
) -> tuple[CapabilityRegistry, PluginSet]:
    """:func:`build_registry`, and what became of each plugin.

    Raises:
        ConfigError: a configured module cannot be imported.
        CapabilityError: a capability is invalid or registered twice.
    """
    registry = CapabilityRegistry()
    permissions = PermissionTable()
    if settings.runtime.stdlib:
        for item in stdlib_capabilities(settings, permissions):
            registry.register(item)
    for name in settings.runtime.capability_modules:
        for item in capabilities_in_module(_import_project_module(name, settings.project_dir)):
            registry.register(item)
    plugins = build_plugins(settings, registry, permissions, report_all=report_all_plugins)
    return registry, plugins


def build_plugins(
    settings: Settings,
    registry: CapabilityRegistry,
    permissions: PermissionTable,
    *,
    report_all: bool = False,
) -> PluginSet:
    """Load the plugins ``[plugins]`` enables into ``registry``, after everything else.

    Installed plugins are not even looked up when none is enabled (an entry point scan
    reads every installed distribution's metadata), unless ``report_all`` asks for the
    installed ones to be listed. A broken plugin is reported in the set, never raised.
    """
    chosen = settings.plugins
    if not chosen.enabled and not report_all:
        return PluginSet()
    return load_plugins(
        discover(),
        registry=registry,
        permissions=permissions,
        enabled=chosen.enabled,
        disabled=chosen.disabled,
        project_dir=settings.project_dir.resolve(),
        aifr_version=__version__,
    )


def build_audit_ledger(settings: Settings, database: SqliteDatabase | None = None) -> AuditLedger:
    """The audit ledger on the project's state database (``database`` if already open).

    ``postgresql://`` URLs get the PostgreSQL store (the ``pg`` extra); SQLite URLs the
    project's state database file.

    Raises:
        ConfigError: the database URL names an unknown backend, or psycopg is missing.
        StorageError: the database cannot be opened or migrated.
    """
    url = settings.database_url
    if database is None and url.startswith(("postgresql://", "postgres://")):
        return open_postgres_ledger(url)
    if database is None:
        path = settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {url!r}: use sqlite:///PATH or postgresql://...",
                key="database_url",
            )
        database = SqliteDatabase(path, synchronous=settings.audit.synchronous)
    return open_sqlite_ledger(database)


def build_token_service(settings: Settings, database: SqliteDatabase | None = None) -> TokenService:
    """The bearer-token service on the project's state database (``database`` if open).

    Tokens in the pre-database ``mcp.tokens_file`` are imported on first use.

    Raises:
        ConfigError: the database URL is not SQLite (tokens have only a SQLite adapter).
    """
    if database is None:
        path = settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {settings.database_url!r}: tokens have only a SQLite adapter "
                "so far; use sqlite:///PATH",
                key="database_url",
            )
        database = SqliteDatabase(path, synchronous=settings.audit.synchronous)
    legacy = settings.path(settings.mcp.tokens_file)
    return TokenService(SqliteTokenStore(database, legacy_file=legacy))


def build_grant_store(settings: Settings) -> GrantStore | None:
    """The grant store on the project's SQLite database (``None`` for other backends)."""
    path = settings.sqlite_path
    return SqliteGrantStore(SqliteDatabase(path)) if path is not None else None


def build_policy(
    settings: Settings, registry: CapabilityRegistry, *, grants: GrantStore | None = None
) -> PolicyEngine:
    """The policy engine over ``policy.directory``, watching it when ``hot_reload`` is on.

    Raises:
        PolicyError: a policy file does not load (file, line and field in the message).
    """
    engine = PolicyEngine.from_directory(
        settings.path(settings.policy.directory),
        grants=grants if grants is not None else build_grant_store(settings),
        known_capabilities=[spec.id for spec in registry.list(all_versions=True)],
    )
    if settings.policy.hot_reload:
        engine.start_watching()
    return engine


def build_app(
    project_dir: Path | str = ".",
    *,
    require_project: bool = False,
    report_all_plugins: bool = False,
) -> App:
    """Load settings for ``project_dir`` and build the objects every command shares.

    ``report_all_plugins`` lists installed plugins that are not enabled as well.

    Raises:
        ConfigError: settings are invalid or the project is missing.
        PolicyError: a policy file does not load.
    """
    settings = load_settings(project_dir, require_project=require_project)
    registry, plugins = build_registry_and_plugins(settings, report_all_plugins=report_all_plugins)
    app = App(
        settings=settings,
        registry=registry,
        policy=build_policy(settings, registry),
        plugins=plugins,
    )
    app.policy.on_change(app.audit_policy_change)
    return app
