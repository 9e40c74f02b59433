"""``PolicyChange``: what the engine tells listeners when its configuration changes.

The policy layer sits below the audit ledger, so it cannot record its own changes;
instead the engine announces each one (a policy reload, a grant issued or revoked) to
the listeners registered with ``PolicyEngine.on_change``, and the composition root
(``aifr.app``) subscribes one that appends a ``config.changed`` audit record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue

__all__ = ["ChangeListener", "PolicyChange"]


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One change to what the engine decides with.

    ``key`` is the configuration that changed (``policy`` or ``policy.grants``),
    ``action`` what happened to it (``reloaded``, ``issued``, ``revoked``), ``actor``
    who did it (a principal, or ``system`` for a reload the file watcher made).
    """

    key: str
    action: str
    actor: str
    details: Mapping[str, JsonValue] = field(default_factory=dict)


ChangeListener = Callable[[PolicyChange], None]
