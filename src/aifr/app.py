"""The composition root: Settings -> adapters -> capabilities -> the objects a command needs.

Nothing else in aifr picks adapters or reads settings; everything below takes plain
constructor arguments (principle 4: explicit injection, no hidden globals).
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

from pydantic import JsonValue

from aifr import __version__
from aifr.audit import AuditEvent, AuditLedger
from aifr.capabilities import Capability, CapabilityRegistry
from aifr.config import CONFIG_FILE_NAME, Settings, load_settings
from aifr.errors import AifrError, ConfigError, ErrorCode, IngestError
from aifr.ingest import (
    ArchiveQuotas,
    ChunkIndex,
    ChunkLimits,
    Embedder,
    FileWorker,
    IngestPipeline,
    InProcessWorker,
    IsolationLimits,
    KeyFileProvider,
    MiniLmEmbedder,
    SandboxedWorker,
    WorkspaceEnumerator,
    create_key_file,
    resolve_index_key,
    write_escrow,
)
from aifr.invocation import (
    ApprovalService,
    CircuitStore,
    EnvSecretProvider,
    FileSecretProvider,
    GlobalContext,
    IdempotencyStore,
    KeyringSecretProvider,
    Runtime,
    SecretProvider,
    SecretResolver,
    TokenService,
)
from aifr.invocation.sandbox import SandboxRules
from aifr.invocation.sandbox_backends import detect
from aifr.plugins import PluginSet, discover, load_plugins
from aifr.policy import GrantStore, PolicyChange, PolicyEngine
from aifr.redaction import redact_url
from aifr.stdlib import PermissionTable, build_stdlib
from aifr.stdlib.findings import FindingsStores
from aifr.stdlib.knowledge import build_knowledge_capabilities
from aifr.storage.fenced_ledger import FencedLedger
from aifr.storage.postgres.approvals import PostgresApprovalStore
from aifr.storage.postgres.audit import open_postgres_ledger
from aifr.storage.postgres.circuits import PostgresCircuitStore
from aifr.storage.postgres.database import PostgresDatabase, is_local_server
from aifr.storage.postgres.findings import PostgresFindingStore, PostgresResourceRegistry
from aifr.storage.postgres.grants import PostgresGrantStore
from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
from aifr.storage.postgres.rates import PostgresRateStore
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.postgres.step_results import PostgresStepResultStore
from aifr.storage.postgres.tokens import PostgresTokenStore
from aifr.storage.postgres.workers import PostgresWorkerRegistry
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import APPROVAL_MIGRATIONS, SqliteApprovalStore
from aifr.storage.sqlite.audit import AUDIT_MIGRATIONS, open_sqlite_ledger
from aifr.storage.sqlite.circuits import CIRCUIT_MIGRATIONS, SqliteCircuitStore
from aifr.storage.sqlite.findings import (
    FINDING_MIGRATIONS,
    SqliteFindingStore,
    SqliteResourceRegistry,
)
from aifr.storage.sqlite.grants import GRANT_MIGRATIONS, SqliteGrantStore
from aifr.storage.sqlite.idempotency import IDEMPOTENCY_MIGRATIONS, SqliteIdempotencyStore
from aifr.storage.sqlite.rates import SqliteRateStore
from aifr.storage.sqlite.runs import WORKFLOW_MIGRATIONS, SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.storage.sqlite.tokens import SqliteTokenStore
from aifr.storage.sqlite.workers import SqliteWorkerRegistry
from aifr.workflows import WorkflowEngine, WorkflowSpec, find_workflow
from aifr.workflows.overlap import CommitOverlap

__all__ = [
    "App",
    "attach_tracing",
    "build_app",
    "build_audit_ledger",
    "build_grant_store",
    "build_plugins",
    "build_ingest_pipeline",
    "build_policy",
    "build_registry",
    "build_registry_and_plugins",
    "build_secrets",
    "build_token_service",
    "capabilities_in_module",
    "open_findings_stores",
    "open_knowledge_index",
    "code_schema_versions",
    "postgres_target",
    "ingest_hidden_paths",
    "reserved_paths",
    "sandbox_report",
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
    def database(self) -> SqliteDatabase | PostgresDatabase:
        """The project's state database: ``sqlite:///PATH`` or ``postgresql://...``.

        Raises:
            ConfigError: the URL names another backend.
        """
        target = postgres_target(self.settings.database_url)
        if target is not None:
            return PostgresDatabase(target[0], schema=target[1])
        path = self.settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {redact_url(self.settings.database_url)!r}: use sqlite:///PATH or "
                "postgresql://...",
                key="database_url",
            )
        return SqliteDatabase(path, synchronous=self.settings.audit.synchronous)

    @cached_property
    def ledger(self) -> AuditLedger:
        """The audit ledger in the state database."""
        database = self.database
        if isinstance(database, PostgresDatabase):
            return open_postgres_ledger(database.dsn, schema=database.schema)
        return open_sqlite_ledger(database)

    @cached_property
    def run_ledger(self) -> AuditLedger:
        """The ledger the runtime writes through: a leased run's records are fenced.

        A workflow step's audit record is appended only while the run's lease epoch is
        the one its attempt began with (see ``aifr.storage.fenced_ledger``).
        """
        return FencedLedger(self.ledger, self.runs)

    @cached_property
    def approvals(self) -> ApprovalService:
        """Durable approval requests, decided under the policy's approver rules."""
        database = self.database
        store = (
            PostgresApprovalStore(database, self.run_ledger)
            if isinstance(database, PostgresDatabase)
            else SqliteApprovalStore(database, self.run_ledger)
        )
        return ApprovalService(
            store,
            self.policy,
            default_ttl_s=self.settings.approvals.expiry_s,
            require_authenticated=self.settings.approvals.require_authenticated,
            audit=self.ledger.append,
        )

    @cached_property
    def runtime(self) -> Runtime:
        """The governed runtime: registry, policy, approvals, audit, limits, secrets."""
        limits = self.settings.runtime
        database, runs = self.database, self.runs
        idempotency: IdempotencyStore
        circuits: CircuitStore
        if isinstance(database, PostgresDatabase):
            assert isinstance(runs, PostgresRunStore)  # built from the same database  # noqa: S101
            idempotency = PostgresStepResultStore(
                runs, PostgresIdempotencyStore(database, self.ledger)
            )
            circuits = PostgresCircuitStore(database)
        else:
            assert isinstance(runs, SqliteRunStore)  # built from the same database  # noqa: S101
            idempotency = StepResultStore(runs, SqliteIdempotencyStore(database, self.ledger))
            circuits = SqliteCircuitStore(database)
        runtime = Runtime(
            self.registry,
            self.policy,
            self.run_ledger,
            approvals=self.approvals,
            idempotency=idempotency,
            circuit_store=circuits,
            secrets=build_secrets(self.settings),
            global_context=GlobalContext(config=self.settings.model_dump(mode="json")),
            default_timeout_s=limits.default_timeout_s,
            circuit_failure_threshold=limits.circuit_failure_threshold,
            circuit_cooldown_s=limits.circuit_cooldown_s,
            sync_execution=limits.sync_execution,
        )
        self.plugins.attach(runtime)  # a plugin's calls go through this runtime
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none")
        if exporter != "none":
            attach_tracing(runtime, exporter)
        return runtime

    @cached_property
    def tokens(self) -> TokenService:
        """The bearer tokens of every HTTP surface, in the state database."""
        return build_token_service(self.settings, self.database)

    @cached_property
    def rates(self) -> SqliteRateStore | PostgresRateStore:
        """Per-token rate buckets in the state database, shared by every API process.

        On SQLite the buckets get their own connections at ``synchronous=NORMAL``: a
        bucket lost to a power cut costs nothing, an fsync per request would.
        """
        database = self.database
        if isinstance(database, PostgresDatabase):
            return PostgresRateStore(database)
        return SqliteRateStore(SqliteDatabase(database.path, synchronous="NORMAL"))

    @cached_property
    def runs(self) -> SqliteRunStore | PostgresRunStore:
        """Workflow runs, steps, leases and the notification outbox."""
        database = self.database
        if isinstance(database, PostgresDatabase):
            return PostgresRunStore(database, self.ledger)
        return SqliteRunStore(database, self.ledger)

    @cached_property
    def workers(self) -> SqliteWorkerRegistry | PostgresWorkerRegistry:
        """The registry of ``aifr worker`` processes sharing the state database."""
        database = self.database
        if isinstance(database, PostgresDatabase):
            return PostgresWorkerRegistry(database)
        return SqliteWorkerRegistry(database)

    @cached_property
    def workflows(self) -> WorkflowEngine:
        """The durable workflow engine on the governed runtime (nothing runs until asked)."""
        return self.new_engine()

    def new_engine(self) -> WorkflowEngine:
        """Another engine, with its own lease owner id, on the same runtime and stores.

        ``aifr worker --concurrency N`` drives N runs at once with N of them.
        """
        approvals = self.settings.approvals
        return WorkflowEngine(
            self.runtime,
            self.runs,
            on_fingerprint_drift=self.settings.workflows.on_fingerprint_drift,
            webhook_url=approvals.webhook_url,
            lease_ttl_s=self.settings.workflows.lease_ttl_s,
            overlap_commits=self.commit_overlap,
        )

    @cached_property
    def commit_overlap(self) -> bool | CommitOverlap:
        """``workflows.overlap_commits`` for the engines: as set, or one shared "auto" policy.

        "auto" on PostgreSQL reads this host's live workers from the registry (at most
        once a second for all of this process's engines); on SQLite nothing defers, so
        the setting has nothing to decide.
        """
        setting = self.settings.workflows.overlap_commits
        database = self.database
        if setting != "auto" or not isinstance(database, PostgresDatabase):
            return setting is not False
        registry, host = self.workers, socket.gethostname()
        lease_ttl_s = self.settings.workflows.lease_ttl_s
        return CommitOverlap(
            lambda: registry.live_on(host, time.time() - lease_ttl_s),
            cpus=os.cpu_count() or 1,
            server_local=is_local_server(database.dsn),
        )

    @cached_property
    def findings(self) -> FindingsStores:
        """The findings store and resource registry (the state database, or PostgreSQL).

        Raises:
            StorageError: ``storage.schema_mismatch`` for a store from an older or newer
                aifr (the message says what to run).
        """
        database = self.database
        return open_findings_stores(
            self.settings, database if isinstance(database, SqliteDatabase) else None
        )

    def watch_runs(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` whenever a run is queued (PostgreSQL ``LISTEN``); returns a stopper.

        ``None`` on SQLite, where workers on one machine poll the file.
        """
        runs = self.runs
        if not isinstance(runs, PostgresRunStore):
            return None
        stop = threading.Event()
        runs.listen(wake, stop)
        return stop.set

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
        """Stop the runtime and close the findings store and state database, if opened."""
        built = vars(self)
        if "findings" in built:
            self.findings[0].close()
        if "runtime" in built:
            self.runtime.close()
        if "ledger" in built and isinstance(self.database, PostgresDatabase):
            self.ledger.close()
        if "rates" in built and isinstance(self.rates, SqliteRateStore):
            self.rates.database.close()
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


def open_findings_stores(
    settings: Settings, database: SqliteDatabase | None = None, *, migrate: bool = False
) -> FindingsStores:
    """The findings store and resource registry ``database_url`` names.

    ``migrate`` upgrades a store an older aifr wrote (``aifr findings migrate``).

    Raises:
        ConfigError: the URL names an unknown backend, or psycopg is missing.
        StorageError: the store cannot be opened, or its schema is older or newer.
    """
    url = settings.database_url
    target = postgres_target(url)
    if target is not None:
        remote = PostgresFindingStore(target[0], schema=target[1], migrate=migrate)
        return remote, PostgresResourceRegistry(remote)
    if database is None:
        path = settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {redact_url(url)!r}: use sqlite:///PATH or postgresql://...",
                key="database_url",
            )
        database = SqliteDatabase(path, synchronous=settings.audit.synchronous)
    local = SqliteFindingStore(database, migrate=migrate)
    return local, SqliteResourceRegistry(local)


class _FindingsOnFirstUse:
    """Opens the findings stores when a ``findings.*`` or ``scan.*`` capability first runs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stores: FindingsStores | None = None

    def __call__(self) -> FindingsStores:
        with self._lock:
            if self._stores is None:
                self._stores = open_findings_stores(self._settings)
            return self._stores


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
        exec_sandbox=run.sandbox,
        exec_read_paths=[Path(p) for p in run.read_paths],
        home=Path(os.environ["HOME"]) if os.environ.get("HOME") else None,
        environ=os.environ,
        reserved=reserved_paths(settings),
        permissions=permissions,
        findings_stores=_FindingsOnFirstUse(settings),
    )


def sandbox_report(settings: Settings) -> dict[str, JsonValue]:
    """What ``aifr sandbox status`` shows: the backend ``[exec] sandbox`` gets here, and its rules."""
    rules = SandboxRules.build(
        [settings.path(root) for root in settings.fs.roots],
        reserved=[settings.state_path, *reserved_paths(settings)],
        home=Path(os.environ["HOME"]) if os.environ.get("HOME") else None,
        extra_read=[Path(p) for p in settings.exec.read_paths],
    )
    return {
        **detect(settings.exec.sandbox, probe_all=True).as_json(),
        "write_roots": [str(p) for p in rules.write_roots],
        "read_only": [str(p) for p in rules.system_read],
        "hidden": [str(p) for p in rules.hidden],
    }


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
        settings.path(settings.index.key_file),
        settings.path(settings.index.directory),
        *(
            [settings.path(settings.index.escrow_public_key)]
            if settings.index.escrow_public_key
            else []
        ),
        project / "__pycache__",
    ]
    for name in settings.runtime.capability_modules:
        top = name.split(".", 1)[0]
        paths += [project / f"{top}.py", project / top]
    return paths


def index_key_providers(settings: Settings) -> list[SecretProvider]:
    """Where the index key is looked up, in ``index.key_sources`` order."""
    providers: list[SecretProvider] = []
    for name in settings.index.key_sources:
        if name == "env":
            providers.append(EnvSecretProvider(os.environ))
        elif name == "file":
            providers.append(KeyFileProvider(settings.path(settings.index.key_file)))
        else:
            providers.append(KeyringSecretProvider(settings.index.keyring_service))
    return providers


def open_knowledge_index(
    settings: Settings, *, create: bool = False
) -> tuple[ChunkIndex, Embedder]:
    """The project's encrypted index and the embedder that fills and queries it.

    With ``create``, a project without an index gets one, and without a key gets a fresh
    key in ``index.key_file`` (and, when ``index.escrow_public_key`` is set, a wrapped
    copy of it beside the index for recovery).

    Raises:
        ConfigError: the ``embed`` extra is not installed.
        IngestError: no key (``ingest.key_missing``), a wrong key (``ingest.key_invalid``),
            or no index yet and ``create`` is false.
    """
    index_dir = settings.path(settings.index.directory)
    database = index_dir / "index.db"
    if not create and not database.exists():
        raise IngestError(
            f"no index at {database}: run `aifr ingest PATH --repo NAME` first",
            code=ErrorCode.INGEST_REPO_NOT_FOUND,
        )
    providers = index_key_providers(settings)
    try:
        key = resolve_index_key(providers)
    except IngestError as exc:
        if not (
            create
            and exc.code is ErrorCode.INGEST_KEY_MISSING
            and "file" in settings.index.key_sources
        ):
            raise
        create_key_file(settings.path(settings.index.key_file))
        key = resolve_index_key(providers)
    # The model is read from the package's own folder; never let a library reach the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    embedder = MiniLmEmbedder(batch_size=settings.index.batch_size)
    try:
        from aifr.ingest.search import Weights  # the embed extra: numpy, usearch, bm25s
        from aifr.storage.sqlite.chunk_index import SqliteChunkIndex  # same extra
    except ImportError as exc:
        raise ConfigError(
            f"the search index needs the embed extra: pip install 'aifr[embed]' ({exc.name} is missing)",
            code=ErrorCode.CONFIG_MISSING_EXTRA,
            extra="embed",
        ) from exc
    weights = Weights(
        rrf_k=settings.index.rrf_k,
        vector_weight=settings.index.vector_weight,
        keyword_weight=settings.index.keyword_weight,
    )
    index = SqliteChunkIndex(
        database, key, model_id=embedder.model_id, dimension=embedder.dimension, weights=weights
    )
    escrow = index_dir / "key.escrow"  # written only once the key has opened the index
    if settings.index.escrow_public_key and not escrow.exists():
        write_escrow(key.export(), settings.path(settings.index.escrow_public_key), escrow)
    return index, embedder


def build_registry(
    settings: Settings, *, policy: Callable[[], PolicyEngine] | None = None
) -> CapabilityRegistry:
    """A registry holding the stdlib, the project's capability modules and enabled plugins.

    ``policy`` is the engine ``knowledge.search`` asks per repository (called on its
    first search); without one, a fresh engine is loaded from the policy folder then.

    Raises:
        ConfigError: a configured module cannot be imported.
        CapabilityError: a capability is invalid or registered twice.
    """
    return build_registry_and_plugins(settings, policy=policy)[0]


def build_registry_and_plugins(
    settings: Settings,
    *,
    policy: Callable[[], PolicyEngine] | None = None,
    report_all_plugins: bool = False,
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
        for item in build_knowledge_capabilities(
            open_index=lambda: open_knowledge_index(settings),
            policy=policy
            or (lambda: PolicyEngine.from_directory(settings.path(settings.policy.directory))),
        ):
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


def postgres_target(url: str) -> tuple[str, str | None] | None:
    """``(dsn, schema)`` for a ``postgresql://`` (or ``postgres://``) URL, else ``None``.

    A ``schema=NAME`` query parameter (aifr's, not libpq's) puts aifr's tables in that
    schema, so several projects can share one database; it is removed from the DSN. The
    rest of the URL reaches libpq as written: rebuilding it with ``urlunsplit`` would
    drop the ``//`` of a URL with no host (``postgresql:///db?host=/run/postgresql``,
    a Unix socket), which libpq then cannot parse.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    base, mark, query = url.partition("?")
    if not mark:
        return url, None
    pairs = [field.partition("=") for field in query.split("&") if field]
    schema = next((unquote(value) for key, _, value in pairs if key == "schema"), None)
    rest = "&".join("".join(pair) for pair in pairs if pair[0] != "schema")
    return (f"{base}?{rest}" if rest else base), schema or None


def build_audit_ledger(settings: Settings, database: SqliteDatabase | None = None) -> AuditLedger:
    """The audit ledger on the project's state database (``database`` if already open).

    ``postgresql://`` URLs get the PostgreSQL store (the ``pg`` extra); SQLite URLs the
    project's state database file.

    Raises:
        ConfigError: the database URL names an unknown backend, or psycopg is missing.
        StorageError: the database cannot be opened or migrated.
    """
    url = settings.database_url
    target = postgres_target(url)
    if database is None and target is not None:
        return open_postgres_ledger(target[0], schema=target[1])
    if database is None:
        path = settings.sqlite_path
        if path is None:
            raise ConfigError(
                f"database_url {redact_url(url)!r}: use sqlite:///PATH or postgresql://...",
                key="database_url",
            )
        database = SqliteDatabase(path, synchronous=settings.audit.synchronous)
    return open_sqlite_ledger(database)


def build_token_service(
    settings: Settings, database: SqliteDatabase | PostgresDatabase | None = None
) -> TokenService:
    """The bearer-token service on the project's state database (``database`` if open).

    Tokens in the pre-database ``mcp.tokens_file`` are imported on first use.

    Raises:
        ConfigError: the database URL names an unknown backend, or psycopg is missing.
    """
    legacy = settings.path(settings.mcp.tokens_file)
    if database is None:
        target = postgres_target(settings.database_url)
        if target is not None:
            database = PostgresDatabase(target[0], schema=target[1], max_size=2)
        else:
            path = settings.sqlite_path
            if path is None:
                raise ConfigError(
                    f"database_url {redact_url(settings.database_url)!r}: use sqlite:///PATH or "
                    "postgresql://...",
                    key="database_url",
                )
            database = SqliteDatabase(path, synchronous=settings.audit.synchronous)
    if isinstance(database, PostgresDatabase):
        return TokenService(PostgresTokenStore(database, legacy_file=legacy))
    return TokenService(SqliteTokenStore(database, legacy_file=legacy))


def build_grant_store(settings: Settings) -> GrantStore | None:
    """The grant store on the project's state database (``None`` for an unknown backend)."""
    target = postgres_target(settings.database_url)
    if target is not None:
        return PostgresGrantStore(PostgresDatabase(target[0], schema=target[1], max_size=2))
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


def build_ingest_pipeline(
    settings: Settings, *, index: ChunkIndex, embedder: Embedder
) -> IngestPipeline:
    """The ingestion pipeline with the ``[ingest]`` settings, filling ``index`` via ``embedder``."""
    conf = settings.ingest
    quotas = ArchiveQuotas(
        max_total_bytes=conf.archive_max_total_bytes,
        max_files=conf.archive_max_files,
        max_ratio=conf.archive_max_ratio,
        max_depth=conf.archive_max_depth,
    )
    limits = ChunkLimits(
        target_lines=min(conf.chunk_target_lines, conf.chunk_max_lines),
        max_lines=conf.chunk_max_lines,
        max_chars=conf.chunk_max_chars,
    )
    worker: FileWorker
    if conf.sandbox:
        worker = SandboxedWorker(
            max_file_bytes=conf.max_file_bytes,
            quotas=quotas,
            limits=limits,
            isolation=IsolationLimits(
                timeout_s=conf.sandbox_timeout_s,
                cpu_s=conf.sandbox_cpu_s,
                memory_bytes=conf.sandbox_memory_mb * 1024 * 1024,
            ),
            mode=settings.exec.sandbox,
            hidden=ingest_hidden_paths(settings),
            home=Path(os.environ["HOME"]) if os.environ.get("HOME") else None,
        )
    else:
        worker = InProcessWorker(max_file_bytes=conf.max_file_bytes, quotas=quotas, limits=limits)
    return IngestPipeline(
        embedder=embedder,
        index=index,
        enumerator=WorkspaceEnumerator(
            include=conf.include,
            exclude=conf.exclude,
            max_file_bytes=conf.max_file_bytes,
            max_archive_bytes=conf.archive_max_total_bytes,
        ),
        worker=worker,
        scratch_dir=settings.state_path / "tmp",
    )


def ingest_hidden_paths(settings: Settings) -> list[Path]:
    """What the ingestion child never reads, even in a workspace holding the project.

    The secrets, signing and index keys, the index, and every entry of the state folder
    but ``tmp`` (where archives are extracted). Policies and workflows stay readable:
    they are ordinary files to index.
    """
    state = settings.state_path
    entries = sorted(p for p in state.iterdir() if p.name != "tmp") if state.is_dir() else []
    return [
        settings.path(settings.secrets.directory),
        settings.path(settings.audit.signing_key_file),
        settings.path(settings.index.key_file),
        settings.path(settings.index.directory),
        *entries,
    ]


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
    # knowledge.search decides per repository with this app's engine, built just below.
    registry, plugins = build_registry_and_plugins(
        settings, policy=lambda: app.policy, report_all_plugins=report_all_plugins
    )
    app = App(
        settings=settings,
        registry=registry,
        policy=build_policy(settings, registry),
        plugins=plugins,
    )
    app.policy.on_change(app.audit_policy_change)
    return app


def code_schema_versions() -> dict[str, int]:
    """The schema version this code migrates each component of the state database to."""
    components = {
        "approvals": APPROVAL_MIGRATIONS,
        "audit": AUDIT_MIGRATIONS,
        "circuits": CIRCUIT_MIGRATIONS,
        "findings": FINDING_MIGRATIONS,
        "grants": GRANT_MIGRATIONS,
        "idempotency": IDEMPOTENCY_MIGRATIONS,
        "workflows": WORKFLOW_MIGRATIONS,
    }
    return {name: max(m.version for m in steps) for name, steps in components.items()}


def attach_tracing(runtime: Runtime, exporter_name: str) -> None:
    """Trace ``runtime``'s invocations to the exporter ``OTEL_TRACES_EXPORTER`` names.

    The runtime's shutdown flushes and stops the exporter.

    Raises:
        ConfigError: OpenTelemetry (the ``otel`` extra, or ``otlp`` for OTLP) is not
            installed, or the exporter name is unknown.
    """
    try:
        from aifr.observability.tracing import (  # the otel extra, loaded only when asked
            InvocationTracer,
            build_tracer_provider,
            exporter_for,
        )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: "
            "pip install 'aifr[otel]'",
            key="OTEL_TRACES_EXPORTER",
        ) from exc
    try:
        exporter = exporter_for(exporter_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'aifr[otlp]'",
            key="OTEL_TRACES_EXPORTER",
        ) from exc
    except ValueError as exc:
        raise ConfigError(str(exc), key="OTEL_TRACES_EXPORTER") from exc
    if exporter is None:
        return
    provider = build_tracer_provider(exporter, batch=exporter_name != "console")
    runtime.events.subscribe(InvocationTracer(provider))
    runtime.global_context.on_shutdown(provider.shutdown, name="tracing")
