"""The project folder that ``aifr init`` creates (DESIGN.md "Where state lives").

```
aifr.toml        settings
policies/        policy YAML files, loaded in name order
workflows/       workflow YAML files
.aifr/           state: SQLite database, index, keys (never committed)
```
"""

from __future__ import annotations

from pathlib import Path

from aifr.config.settings import CONFIG_FILE_NAME
from aifr.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "DEFAULT_POLICY", "InitReport", "init_project"]

DEFAULT_CONFIG = """\
# aifr project settings. Every key can be overridden by an AIFR_* environment variable
# (nested keys with "__", e.g. AIFR_FS__ROOTS='["data"]').

database_url = "sqlite:///.aifr/aifr.db"
principal = "local-user"

[runtime]
# Python modules (importable from this folder) whose @capability objects are registered.
capability_modules = []

[policy]
directory = "policies"

[approvals]
expiry_s = 3600
# Anyone with a shell in this folder (a coding agent included) can run
# 'aifr approvals approve ID --as bob' and approve under any name. Turn this on to accept
# a decision only from a proven principal: the API or console with the approver's token,
# or the CLI given '--token' / AIFR_TOKEN ('aifr tokens create --principal bob').
# require_authenticated = true

[fs]
roots = ["."]

[net]
allow_hosts = []

[exec]
allow_commands = []
# commands run in a process sandbox: "auto" (Landlock, else bubblewrap, else none with a
# warning), "landlock", "bubblewrap" or "none"; `aifr sandbox status` shows the choice
sandbox = "auto"

[plugins]
# Installed plugins (entry point group aifr.plugins) load only when named here, or all
# with "*"; 'aifr plugins list' shows what is installed. disabled = [...] always wins.
enabled = []

# MCP server ('aifr mcp'); uncomment to list tools as io_fs_read_file instead of
# io.fs.read_file, the only form Claude Desktop and model APIs accept:
# [mcp]
# tool_names = "portable"
"""

DEFAULT_POLICY = """\
# Rules are tried in order; the first whose `when` matches decides.
# Without a match, the default applies: ALLOW for LOW/MEDIUM risk, DENY for HIGH/CRITICAL.
version: 1
roles:
  admin:
    principals: []
  approver:
    principals: []
rules:
  - id: allow-reads
    when:
      operation: READ
    decision: ALLOW
    reason: reading is low risk
  - id: approve-high-risk
    when:
      risk_at_least: HIGH
    decision: REQUIRE_APPROVAL
    reason: high-risk actions need a human
    approvers: [approver, admin]
approvals:
  - risk: HIGH
    roles: [approver, admin]
  - risk: CRITICAL
    roles: [admin]
    quorum: 2
# Inputs may name a secret as secret://NAME; a reference no entry below covers is denied,
# so an agent cannot hand a secret to a capability of its choosing. For example:
# secrets:
#   - names: [GITHUB_TOKEN]
#     when:
#       capability: "io.net.*"
#       roles: [admin]
"""

_GITIGNORE = "# aifr state: database, index, keys\n*\n"


class InitReport(list[Path]):
    """Paths created by :func:`init_project` (existing ones are left untouched)."""


def init_project(directory: Path | str) -> InitReport:
    """Create the project layout in ``directory``, never overwriting existing files.

    Raises:
        ConfigError: ``directory`` exists and is not a folder, or cannot be written.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory", path=str(root))
    created = InitReport()
    files = {
        root / CONFIG_FILE_NAME: DEFAULT_CONFIG,
        root / "policies" / "default.yaml": DEFAULT_POLICY,
        root / ".aifr" / ".gitignore": _GITIGNORE,
    }
    try:
        for folder in (root, root / "policies", root / "workflows", root / ".aifr"):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                created.append(folder)
        (root / ".aifr").chmod(0o700)
        for path, content in files.items():
            if not path.exists():
                path.write_text(content, encoding="utf-8")
                created.append(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create project in {root}: {exc.strerror}", path=str(root)
        ) from exc
    return created
