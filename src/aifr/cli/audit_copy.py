"""Reading a sink's copy of the ledger for ``aifr audit verify --against-sink|--sink|--copy``.

NATS JetStream is read back directly (records and the witness's checkpoints); an HTTP
collector has no read protocol of aifr's, so its copy is the JSON lines it kept (every
POSTed body appended as is), given with ``--copy FILE``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aifr.audit import SinkCopy, read_copy_lines
from aifr.config import Settings
from aifr.errors import AuditError, ErrorCode
from aifr.redaction import redact_url

__all__ = ["read_copies"]


def read_copies(
    settings: Settings, *, configured: bool, urls: list[str], files: list[Path]
) -> list[SinkCopy]:
    """The copies to hold the ledger to: the configured sink's, the named sinks', the files'.

    Raises:
        AuditError: ``config.invalid`` when ``--against-sink`` is given without ``audit.sink_url``
            or names an HTTP sink; ``audit.sink_unavailable`` when NATS cannot be read; a
            file that cannot be read or parsed.
    """
    wanted = list(urls)
    if configured:
        if settings.audit.sink_url is None:
            raise AuditError(
                "--against-sink: audit.sink_url is not set; name the sink with --sink URL",
                code=ErrorCode.CONFIG_INVALID,
            )
        wanted.insert(0, settings.audit.sink_url)
    copies = [_fetch(url) for url in wanted]
    copies += [_read_file(path) for path in files]
    return copies


def _fetch(url: str) -> SinkCopy:
    if not url.startswith("nats://"):
        raise AuditError(
            f"{redact_url(url)}: only a NATS JetStream sink can be read back; for an HTTP "
            "receiver pass the JSON lines it kept with --copy FILE",
            code=ErrorCode.CONFIG_INVALID,
        )
    from aifr.audit.sinks import NatsSink, sink_from_url  # nats loads for this command only

    sink = sink_from_url(url)
    assert isinstance(sink, NatsSink)  # noqa: S101  # nats:// URLs make NATS sinks

    async def fetch() -> SinkCopy:
        try:
            return await sink.fetch_copy()
        finally:
            await sink.aclose()

    return asyncio.run(fetch())


def _read_file(path: Path) -> SinkCopy:
    try:
        with path.open(encoding="utf-8") as lines:
            return read_copy_lines(str(path), lines)
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the sink's copy: {exc.strerror}") from exc
