"""One typed, frozen settings object: ``aifr.toml`` first, then ``AIFR_*`` variables.

Environment variables win over the file; nested keys use ``__`` (``AIFR_FS__ROOTS``).
Only ``config``, ``app`` and ``cli`` read settings; every other part takes plain
constructor arguments.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from aifr.errors import ConfigError, ErrorCode
from aifr.invocation.identity import principal_problem
from aifr.suggestions import did_you_mean

__all__ = [
    "CONFIG_FILE_NAME",
    "ApprovalSettings",
    "AuditSettings",
    "ExecSettings",
    "FsSettings",
    "IndexSettings",
    "IngestSettings",
    "McpSettings",
    "NetSettings",
    "PluginSettings",
    "PolicySettings",
    "RuntimeSettings",
    "SecretsSettings",
    "Settings",
    "UpstreamSettings",
    "UpstreamToolRisk",
    "WorkflowSettings",
    "load_settings",
]

CONFIG_FILE_NAME = "aifr.toml"
_SECTION = ConfigDict(frozen=True, extra="forbid")


class RuntimeSettings(BaseModel):
    """Invocation limits and the capability modules a project registers."""

    model_config = _SECTION

    capability_modules: list[str] = Field(default_factory=list)
    default_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    circuit_failure_threshold: Annotated[int, Field(ge=1)] = 5
    circuit_cooldown_s: Annotated[float, Field(ge=0)] = 30.0
    sync_execution: Literal["auto", "thread", "inline", "loop"] = "auto"
    stdlib: bool = True


class PolicySettings(BaseModel):
    """Where policies live and whether the engine reloads them on change."""

    model_config = _SECTION

    directory: str = "policies"
    hot_reload: bool = False


class AuditSettings(BaseModel):
    """Audit ledger durability and optional shipping to an external sink."""

    model_config = _SECTION

    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sink_url: str | None = None
    signing_key_file: str = ".aifr/keys/audit-ed25519.pem"
    checkpoint_every_records: Annotated[int, Field(ge=1)] = 1000
    checkpoint_every_s: Annotated[float, Field(gt=0)] = 300.0


class ApprovalSettings(BaseModel):
    """How long approvals live and where notifications go."""

    model_config = _SECTION

    expiry_s: Annotated[float, Field(gt=0)] = 3600.0
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    replay_window_s: Annotated[float, Field(gt=0)] = 300.0
    require_authenticated: bool = False


SecretProviderName = Literal["env", "file", "keyring"]


def _default_secret_providers() -> list[SecretProviderName]:
    return ["env", "file"]


class SecretsSettings(BaseModel):
    """Where ``secret://NAME`` references are resolved, in provider order."""

    model_config = _SECTION

    providers: list[SecretProviderName] = Field(default_factory=_default_secret_providers)
    env_prefix: str = ""
    directory: str = ".aifr/secrets"
    keyring_service: str = "aifr"


class WorkflowSettings(BaseModel):
    """Workflow definitions, drift rule, leases and how long finished runs are kept."""

    model_config = _SECTION

    directory: str = "workflows"
    on_fingerprint_drift: Literal["needs_review", "continue", "fail"] = "needs_review"
    lease_ttl_s: float = Field(default=30.0, gt=0)
    overlap_commits: bool | Literal["auto"] = "auto"
    """On PostgreSQL, let the next step's checks run while the previous step's commit is
    flushed (its confirmation read before the next step acts; see docs/scaleout.md). Off,
    each step waits for its commit's confirmation before anything else: better where
    several busy workers share the database server's CPUs. ``"auto"`` (the default)
    overlaps unless the server runs on this host and this host's live workers and the
    server together need more cores than it has (read from the worker registry)."""
    retain_finished_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Finished runs older than this many days are deleted by ``aifr worker`` (hourly);
    ``None`` keeps them. Their audit records stay (``aifr runs prune`` prunes on demand)."""


class FsSettings(BaseModel):
    """Roots the ``io.fs.*`` capabilities are confined to (relative to the project)."""

    model_config = _SECTION

    roots: list[str] = Field(default_factory=lambda: ["."])
    max_read_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    max_write_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024


class NetSettings(BaseModel):
    """Hosts and schemes ``io.net.*`` may reach."""

    model_config = _SECTION

    allow_hosts: list[str] = Field(default_factory=list)
    allow_schemes: list[str] = Field(default_factory=lambda: ["https"])
    allow_private_addresses: bool = False
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_response_bytes: Annotated[int, Field(gt=0)] = 5 * 1024 * 1024


class ExecSettings(BaseModel):
    """Commands ``sys.exec`` may run and the limits applied to them."""

    model_config = _SECTION

    allow_commands: list[str] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_memory_mb: Annotated[int, Field(gt=0)] = 512
    max_output_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    sandbox: Literal["auto", "landlock", "bubblewrap", "none"] = "auto"
    read_paths: list[Annotated[str, Field(pattern=r"^/")]] = Field(default_factory=list)


class PluginSettings(BaseModel):
    """Which installed plugins load: none unless named (``"*"`` for all), ``disabled`` wins.

    Plugin code runs inside the runtime's process, so loading one is a decision about
    what code runs next to the audit key and the secrets: aifr makes it explicit rather
    than running whatever a dependency happened to install.
    """

    model_config = _SECTION

    enabled: list[str] = Field(default_factory=list)
    disabled: list[str] = Field(default_factory=list)


IndexKeySource = Literal["env", "file", "keyring"]


def _default_key_sources() -> list[IndexKeySource]:
    return ["env", "file"]


class IndexSettings(BaseModel):
    """The encrypted search index: where it lives, its key, recovery escrow and fusion.

    The key is looked up as ``AIFR_INDEX_KEY`` in ``key_sources`` order (the environment,
    ``key_file``, the OS keyring under ``keyring_service``). ``escrow_public_key`` (an
    RSA public key, PEM) turns recovery escrow on; it is off by default.
    """

    model_config = _SECTION

    directory: str = ".aifr/index"
    key_sources: list[IndexKeySource] = Field(default_factory=_default_key_sources)
    key_file: str = ".aifr/keys/index.key"
    keyring_service: str = "aifr"
    escrow_public_key: str | None = None
    batch_size: Annotated[int, Field(gt=0, le=1024)] = 32
    rrf_k: Annotated[float, Field(gt=0)] = 20.0
    vector_weight: Annotated[float, Field(ge=0)] = 2.0
    keyword_weight: Annotated[float, Field(ge=0)] = 1.0


def _principal_name(name: str) -> str:
    problem = principal_problem(name)
    if problem is not None:
        raise ValueError(
            f"{name!r} {problem}: a principal is a printable name without spaces around it"
        )
    return name


PrincipalName = Annotated[str, AfterValidator(_principal_name)]
"""A principal's name, held to the runtime's rule, so a bad one stops start-up, not every call."""


class UpstreamToolRisk(BaseModel):
    """What an upstream MCP server's tools matching ``tools`` (a glob) do, as aifr judges them.

    An upstream tool no entry matches is an undeclared WRITE at HIGH risk.
    ``compensation`` names the capability that undoes a call (often another tool of the
    same upstream) and ``compensation_arguments`` its arguments, templates over the
    call's ``inputs`` and ``output``.
    """

    model_config = _SECTION

    tools: str = Field(min_length=1)
    operation: Literal["READ", "WRITE", "DELETE", "EXECUTE", "NETWORK"] = "WRITE"
    risk: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] | None = None
    reversible: bool = True
    scope: str = "external"
    compensation: str | None = None
    compensation_arguments: dict[str, JsonValue] = Field(default_factory=dict)
    requires_approval: bool = False


class UpstreamSettings(BaseModel):
    """One third-party MCP server aifr governs: how to reach it and what its tools may do.

    Exactly one of ``command`` (stdio) and ``url`` (streamable HTTP) is given. ``env``
    and ``headers`` values may be ``secret://NAME`` references, resolved when the
    upstream starts. ``expose`` globs pick the tools served (all by default);
    ``max_calls_per_minute`` bounds the calls aifr forwards to it. ``resources`` and
    ``prompts`` pass the server's resources and prompts through, read-only;
    ``health_check_s`` is how often an idle connection is pinged (``None``: never).
    """

    model_config = _SECTION

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=40)]
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: Annotated[str, Field(pattern=r"(?i)^https?://")] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    expose: list[str] = Field(default_factory=lambda: ["*"])
    risk: list[UpstreamToolRisk] = Field(default_factory=list)
    max_calls_per_minute: Annotated[int, Field(ge=1)] | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    resources: bool = False
    prompts: bool = False
    health_check_s: Annotated[float, Field(gt=0)] | None = 30.0

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamSettings:
        if bool(self.command) == (self.url is not None):
            raise ValueError(
                f"upstream {self.name!r}: give exactly one of command (stdio) and url (http)"
            )
        return self


class McpSettings(BaseModel):
    """The MCP server: identities on local transports, tokens, socket and HTTP address.

    ``principal`` and ``roles`` are who a stdio or Unix-socket client acts as (a socket
    peer's uid may map to another principal through ``uid_principals``); ``operator``
    is the human behind the client whose answer to an approval prompt is recorded.
    ``tool_names`` lists tools by capability id (``ids``) or under names matching
    ``^[a-zA-Z0-9_-]{1,64}$`` (``portable``), which Claude Desktop and model APIs require.
    ``list_tools`` leaves out of a caller's tool list what the policy always denies it
    (``permitted``) or lists every tool (``all``); ``upstreams`` are third-party MCP
    servers served through the gateway (docs/gateway.md).
    Over HTTP only pages on this machine may call the server; ``allowed_origins``
    (``https://console.example.com``) and ``allowed_hosts`` (a reverse proxy's
    ``mcp.example.com``) name the others.
    """

    model_config = _SECTION

    principal: PrincipalName = "mcp-client"
    tool_names: Literal["ids", "portable"] = "ids"
    list_tools: Literal["permitted", "all"] = "permitted"
    upstreams: list[UpstreamSettings] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    operator: PrincipalName | None = None
    uid_principals: dict[str, PrincipalName] = Field(default_factory=dict)
    tokens_file: str = ".aifr/tokens.json"
    socket: str = ".aifr/mcp.sock"
    socket_mode: Annotated[int, Field(ge=0, le=0o777)] = 0o600
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    allowed_origins: list[Annotated[str, Field(pattern=r"(?i)^https?://[^/\s?#]+/?$")]] = Field(
        default_factory=list
    )
    allowed_hosts: list[Annotated[str, Field(pattern=r"^[^/\s?#@]+$")]] = Field(
        default_factory=list
    )


class IngestSettings(BaseModel):
    """What ``aifr ingest`` reads from a workspace, and the limits it reads it under.

    ``include`` and ``exclude`` are gitignore-style globs relative to the workspace (an
    empty ``include`` means every file). Archive quotas hold for one archive and all it
    nests. ``sandbox`` parses files and extracts archives in a limited child process;
    turn it off only for workspaces you trust.
    """

    model_config = _SECTION

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    max_file_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    archive_max_total_bytes: Annotated[int, Field(gt=0)] = 256 * 1024 * 1024
    archive_max_files: Annotated[int, Field(gt=0)] = 10_000
    archive_max_ratio: Annotated[float, Field(gt=1)] = 100.0
    archive_max_depth: Annotated[int, Field(ge=1, le=8)] = 2
    sandbox: bool = True
    sandbox_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    sandbox_cpu_s: Annotated[int, Field(gt=0)] = 60
    sandbox_memory_mb: Annotated[int, Field(ge=64)] = 1024
    debounce_ms: Annotated[int, Field(gt=0, le=60_000)] = 500
    chunk_target_lines: Annotated[int, Field(gt=0)] = 40
    chunk_max_lines: Annotated[int, Field(gt=0)] = 60
    chunk_max_chars: Annotated[int, Field(ge=200)] = 2000


class ApiSettings(BaseModel):
    """``aifr serve``: the REST API's address, TLS pair, body limit and per-token rate.

    Only pages on this machine may call it from a browser; ``allowed_origins`` names
    others. ``rate_per_s`` and ``burst`` bound each token's requests (429 beyond).
    """

    model_config = _SECTION

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    tls_cert: str | None = None
    tls_key: str | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    rate_per_s: Annotated[float, Field(gt=0)] = 200.0
    burst: Annotated[int, Field(gt=0)] = 400
    allowed_origins: list[Annotated[str, Field(pattern=r"(?i)^https?://[^/\s?#]+/?$")]] = Field(
        default_factory=list
    )


class Settings(BaseSettings):
    """Everything configurable in an aifr project, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="AIFR_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    project_dir: Path = Path()
    database_url: str = "sqlite:///.aifr/aifr.db"
    state_dir: str = ".aifr"
    principal: PrincipalName = "local-user"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    runtime: RuntimeSettings = RuntimeSettings()
    policy: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    secrets: SecretsSettings = SecretsSettings()
    workflows: WorkflowSettings = WorkflowSettings()
    fs: FsSettings = FsSettings()
    net: NetSettings = NetSettings()
    exec: ExecSettings = ExecSettings()
    mcp: McpSettings = McpSettings()
    api: ApiSettings = ApiSettings()
    plugins: PluginSettings = PluginSettings()
    index: IndexSettings = IndexSettings()
    ingest: IngestSettings = IngestSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003  # pydantic-settings hook signature
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003  # pydantic-settings hook signature
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003  # pydantic-settings hook signature
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, then environment, then ``aifr.toml``."""
        return (init_settings, env_settings)

    def path(self, relative: str) -> Path:
        """Resolve a project-relative setting to an absolute path."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else (self.project_dir / candidate).resolve()

    @property
    def state_path(self) -> Path:
        """The project's ``.aifr`` folder."""
        return self.path(self.state_dir)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or ``None`` when the URL names another backend."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        return self.path(self.database_url[len(prefix) :])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", file=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", file=str(path)) from exc


def _env_name(loc: tuple[int | str, ...]) -> str:
    """The variable that sets the value at ``loc``: the longest prefix of it that is set.

    ``AIFR_FS__ROOTS`` sets ``fs.roots`` and ``AIFR_FS`` (a JSON table) all of ``fs``;
    pydantic-settings reads names case-insensitively, so the lookup does too.
    """
    names = {name.upper() for name in os.environ}
    keys = [str(part).upper() for part in loc if isinstance(part, str)]
    candidates = ["AIFR_" + "__".join(keys[:size]) for size in range(len(keys), 0, -1)]
    return next((name for name in candidates if name in names), candidates[0])


def _is_json_valued(name: str) -> bool:
    """Whether the variable ``name`` sets a list, a mapping or a section (read as JSON)."""
    model: type[BaseModel] = Settings
    annotation: Any = None
    for part in name.upper().removeprefix("AIFR_").split("__"):
        fields = {key.upper(): info for key, info in model.model_fields.items()}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, list | dict | BaseModel)


def _undecodable_variables(field: str) -> list[str]:
    """The variables under ``AIFR_<FIELD>`` that are read as JSON but are not JSON."""
    prefix = f"AIFR_{field.upper()}"
    found = []
    for name, value in os.environ.items():
        upper = name.upper()
        if upper != prefix and not upper.startswith(prefix + "__"):
            continue
        if not _is_json_valued(upper):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError:
            found.append(upper)
    return sorted(found)


def _mistyped_variable(environ: typing.Mapping[str, str]) -> tuple[str, str] | None:
    """An ``AIFR_*`` variable whose section is a near miss of a setting, and the fix.

    Other tools' ``AIFR_*`` variables (``AIFR_TEST_PG_DSN``) are left alone; only a name
    one or two letters away from a settings section (``AIFR_AUDT__SYNCHRONOUS``) is
    taken for a typo, which would otherwise be ignored without a word.
    """
    sections = list(Settings.model_fields)
    for name in sorted(environ):
        if not name.upper().startswith("AIFR_"):
            continue
        head, separator, rest = name[len("AIFR_") :].partition("__")
        if head.lower() in sections:
            continue
        close = difflib.get_close_matches(head.lower(), sections, n=1, cutoff=0.8)
        if close:
            return name, f"AIFR_{close[0].upper()}{separator}{rest.upper()}"
    return None


def _env_settings(root: Path, config_file: Path) -> Settings:
    """Settings from ``AIFR_*`` variables alone; a bad one is named in the error.

    Raises:
        ConfigError: a variable holds an invalid value, a list or table variable is
            not JSON, or a variable's name is a near miss of a setting.
    """
    mistyped = _mistyped_variable(os.environ)
    if mistyped is not None:
        name, meant = mistyped
        raise ConfigError(
            f"environment variable {name} is not an aifr setting: did you mean {meant}?",
            variable=name,
            suggestion=meant,
        )
    try:
        return Settings(project_dir=root)
    except SettingsError as exc:
        field = re.search(r'field "([^"]+)"', str(exc))
        name = field.group(1) if field else "?"
        variables = _undecodable_variables(name) or [f"AIFR_{name.upper()}"]
        raise ConfigError(
            f"invalid settings: {name}: environment variable {', '.join(variables)} is not "
            "valid JSON (lists and tables are written as JSON, e.g. "
            "AIFR_FS__ROOTS='[\"data\"]')",
            file=str(config_file),
            variables=list(variables),
        ) from exc
    except PydanticValidationError as exc:
        raise _config_error(exc, config_file, from_env=True) from exc


def _config_error(
    exc: PydanticValidationError, config_file: Path, *, from_env: bool
) -> ConfigError:
    """One ``ConfigError`` naming every bad key and where its value came from."""
    problems: list[JsonValue] = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"])
        source = f"environment variable {_env_name(error['loc'])}" if from_env else str(config_file)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting" + did_you_mean(Settings, error["loc"])
        problems.append(f"{key}: {message} (from {source})")
    return ConfigError(
        "invalid settings: " + "; ".join(map(str, problems)),
        file=str(config_file),
        problems=problems,
    )


def load_settings(project_dir: Path | str, *, require_project: bool = False) -> Settings:
    """Load the settings of the project in ``project_dir``.

    ``AIFR_*`` variables are validated on their own first, so an error names the
    variable at fault; whatever fails after that came from ``aifr.toml``.

    Raises:
        ConfigError: the file is not valid TOML, a value is invalid (the message names
            the key and whether it came from the file or an ``AIFR_*`` variable), or
            ``require_project`` is set and there is no ``aifr.toml``.
    """
    root = Path(project_dir).resolve()
    config_file = root / CONFIG_FILE_NAME
    if config_file.is_file():
        file_values = _read_toml(config_file)
    elif require_project:
        raise ConfigError(
            f"no {CONFIG_FILE_NAME} in {root}: run 'aifr init' there first",
            code=ErrorCode.CONFIG_PROJECT_MISSING,
            project_dir=str(root),
        )
    else:
        file_values = {}
    file_values.pop("project_dir", None)
    env_only = _env_settings(root, config_file)
    try:
        return _merged_settings(root, file_values, env_only)
    except PydanticValidationError as exc:
        raise _config_error(exc, config_file, from_env=False) from exc


def _merged_settings(root: Path, file_values: dict[str, Any], env_only: Settings) -> Settings:
    env_set = env_only.model_fields_set - {"project_dir"}
    merged = {**file_values}
    for key in env_set:
        value = getattr(env_only, key)
        if isinstance(value, BaseModel) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value.model_dump(exclude_unset=True)}
        else:
            merged[key] = value.model_dump() if isinstance(value, BaseModel) else value
    return Settings(project_dir=root, **merged)
