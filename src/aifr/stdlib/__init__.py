"""The standard library of capabilities (DESIGN.md part F): fs, net, data and sys."""

from aifr.stdlib.confine import ConfinedPath, Confinement
from aifr.stdlib.data import build_data_capabilities
from aifr.stdlib.fs import build_fs_capabilities
from aifr.stdlib.journal import FsJournal
from aifr.stdlib.library import build_stdlib
from aifr.stdlib.net import build_net_capabilities
from aifr.stdlib.net_guard import NetGuard, redact_headers, redact_url
from aifr.stdlib.permissions import PLUGIN_PRINCIPAL_PREFIX, Permissions, PermissionTable
from aifr.stdlib.system import build_system_capabilities, is_secret_like, mask_value

__all__ = [
    "PLUGIN_PRINCIPAL_PREFIX",
    "ConfinedPath",
    "Confinement",
    "FsJournal",
    "NetGuard",
    "PermissionTable",
    "Permissions",
    "build_data_capabilities",
    "build_fs_capabilities",
    "build_net_capabilities",
    "build_stdlib",
    "build_system_capabilities",
    "is_secret_like",
    "mask_value",
    "redact_headers",
    "redact_url",
]
