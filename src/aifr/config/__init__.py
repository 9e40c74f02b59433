"""Settings and the project layout."""

from aifr.config.project import DEFAULT_CONFIG, DEFAULT_POLICY, InitReport, init_project
from aifr.config.settings import (
    CONFIG_FILE_NAME,
    ApprovalSettings,
    AuditSettings,
    ExecSettings,
    FsSettings,
    McpSettings,
    NetSettings,
    PluginSettings,
    PolicySettings,
    RuntimeSettings,
    SecretsSettings,
    Settings,
    UpstreamSettings,
    UpstreamToolRisk,
    WorkflowSettings,
    load_settings,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_CONFIG",
    "DEFAULT_POLICY",
    "ApprovalSettings",
    "AuditSettings",
    "ExecSettings",
    "FsSettings",
    "InitReport",
    "McpSettings",
    "UpstreamSettings",
    "UpstreamToolRisk",
    "NetSettings",
    "PluginSettings",
    "PolicySettings",
    "RuntimeSettings",
    "SecretsSettings",
    "Settings",
    "WorkflowSettings",
    "init_project",
    "load_settings",
]
