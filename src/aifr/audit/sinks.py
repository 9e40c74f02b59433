"""External sinks for audit records: NATS JetStream and an HTTP collector.

Both deliver a batch in order and return only after the sink acknowledged every record;
both raise ``AuditError`` (``audit.sink_unavailable``) when the sink is down or refuses,
so the outbox keeps the records and retries. Each record carries its id for the sink to
drop a redelivery: JetStream does so itself (``Nats-Msg-Id`` within the stream's
duplicate window), an HTTP collector receives ``Idempotency-Key`` per batch and the
record ids in the body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import httpx

from aifr.audit.checkpoint import Checkpoint
from aifr.audit.export import record_line
from aifr.audit.ports import Sink
from aifr.audit.record import AuditRecord
from aifr.audit.sink_copy import SinkCopy
from aifr.errors import AuditError, ErrorCode
from aifr.redaction import redact_url

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

__all__ = ["HttpSink", "NatsSink", "sink_from_url", "sink_name"]

logger = logging.getLogger(__name__)

_SUBJECT_TOKEN = re.compile(r"[^A-Za-z0-9_.-]")


async def _log_nats_error(error: Exception) -> None:
    """nats-py reports connection errors here; the send that failed raises its own."""
    logger.debug("nats: %s: %s", type(error).__name__, error)


def _shown_url(url: str) -> str:
    """``url`` as a sink's name shows it: ``user:***@``, ``?token=***`` (``aifr.redaction``).

    The name keys the sink's shipping cursor and appears in logs, errors and the CLI's
    output, so a password in ``nats://user:pass@host`` or a ``?token=`` must not reach
    any of them; the marker in their place also keeps the cursor when a password
    rotates. A URL with no credentials is shown as given.
    """
    return redact_url(url)


def _check_http_url(url: str) -> None:
    """Refuse a URL no request can be sent to, before the first send fails with a traceback.

    Raises:
        AuditError: ``config.invalid``: the URL does not parse, has no host or a port
            outside 1..65535.
    """
    try:
        parsed = httpx.URL(url)
        problem = (
            "it has no host"
            if not parsed.host
            else "its port is outside 1..65535"
            if parsed.port is not None and not 0 < parsed.port < 65536
            else None
        )
    except httpx.InvalidURL as exc:
        problem = str(exc)
    if problem is not None:
        raise AuditError(
            f"audit sink URL {_shown_url(url)!r} is not usable: {problem}",
            code=ErrorCode.CONFIG_INVALID,
            url=_shown_url(url),
        )


def _unavailable(sink: str, problem: str) -> AuditError:
    return AuditError(
        f"audit sink {sink} is unavailable: {problem}",
        code=ErrorCode.AUDIT_SINK_UNAVAILABLE,
        sink=sink,
    )


class HttpSink:
    """POSTs each batch as JSON lines to ``url``; any 2xx answer acknowledges the batch."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _check_http_url(url)
        self.url = url
        self.name = name or f"http:{_shown_url(url)}"
        self._headers = dict(headers or {})
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, records: Sequence[AuditRecord]) -> None:
        """POST ``records`` (in order, one JSON line each).

        Raises:
            AuditError: ``audit.sink_unavailable`` when the request fails or is not 2xx.
        """
        if not records:
            return
        body = "".join(record_line(r) + "\n" for r in records).encode("utf-8")
        headers = {
            **self._headers,
            "Content-Type": "application/x-ndjson",
            "Idempotency-Key": f"{records[0].id}..{records[-1].id}",
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise _unavailable(self.name, f"HTTP {response.status_code}")

    async def send_checkpoint(self, checkpoint: Checkpoint) -> None:
        """POST a signed checkpoint as one JSON object ``{"checkpoint": {...}}``.

        Raises:
            AuditError: ``audit.sink_unavailable`` when the request fails or is not 2xx.
        """
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": f"checkpoint-{checkpoint.seq}-{checkpoint.hash[:16]}",
        }
        body = json.dumps({"checkpoint": checkpoint.to_dict()}).encode("utf-8")
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise _unavailable(self.name, f"HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class NatsSink:
    """Publishes each record to JetStream subject ``<prefix>.<kind>`` in stream ``stream``.

    The stream is created on first use if missing. Every publish waits for its ack, so a
    batch is acknowledged in order; ``Nats-Msg-Id`` is the record id.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = "AIFR_AUDIT",
        subject_prefix: str = "aifr.audit",
        name: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.name = name or f"nats:{_shown_url(url)}/{stream}"
        self.timeout_s = timeout_s
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None

    def subject_for(self, record: AuditRecord) -> str:
        """The subject a record is published on (its kind, made a valid subject)."""
        return f"{self.subject_prefix}.{_SUBJECT_TOKEN.sub('_', record.event.kind)}"

    async def _jetstream(self) -> JetStreamContext:
        if self._js is not None and self._client is not None and self._client.is_connected:
            return self._js
        import nats  # first use only: most projects never ship
        from nats.js.errors import NotFoundError

        await self.aclose()
        # One attempt, no background reconnects: the outbox owns retrying and backoff.
        self._client = await asyncio.wait_for(
            nats.connect(
                servers=[self.url],
                connect_timeout=self.timeout_s,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_log_nats_error,
            ),
            timeout=self.timeout_s * 2,
        )
        js = self._client.jetstream(timeout=self.timeout_s)
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(name=self.stream, subjects=[f"{self.subject_prefix}.>"])
        self._js = js
        return js

    async def send(self, records: Sequence[AuditRecord]) -> None:
        """Publish ``records`` one by one, each acknowledged before the next.

        Raises:
            AuditError: ``audit.sink_unavailable`` when NATS is unreachable or refuses.
        """
        if not records:
            return
        from nats.errors import Error as NatsError

        try:
            js = await self._jetstream()
            for record in records:
                await js.publish(
                    self.subject_for(record),
                    record_line(record).encode("utf-8"),
                    headers={"Nats-Msg-Id": record.id},
                )
        except (TimeoutError, NatsError, OSError) as exc:
            await self.aclose()
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    @property
    def checkpoint_subject(self) -> str:
        """The subject signed checkpoints are published on (no record kind starts with _)."""
        return f"{self.subject_prefix}._checkpoint"

    async def send_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Publish a signed checkpoint on :attr:`checkpoint_subject`, acknowledged.

        Raises:
            AuditError: ``audit.sink_unavailable`` when NATS is unreachable or refuses.
        """
        from nats.errors import Error as NatsError

        try:
            js = await self._jetstream()
            await js.publish(
                self.checkpoint_subject,
                json.dumps(checkpoint.to_dict()).encode("utf-8"),
                headers={"Nats-Msg-Id": f"checkpoint-{checkpoint.seq}-{checkpoint.hash[:16]}"},
            )
        except (TimeoutError, NatsError, OSError) as exc:
            await self.aclose()
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint the stream holds (the witness's copy), if any.

        Raises:
            AuditError: ``audit.sink_unavailable`` when NATS is unreachable, or the
                message is not a checkpoint.
        """
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        try:
            js = await self._jetstream()
            message = await js.get_last_msg(self.stream, self.checkpoint_subject)
        except NotFoundError:
            return None
        except (TimeoutError, NatsError, OSError) as exc:
            await self.aclose()
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        try:
            return Checkpoint.from_dict(json.loads(message.data or b""))
        except ValueError as exc:
            raise AuditError(
                f"{self.name}: the newest message on {self.checkpoint_subject} is not JSON"
            ) from exc

    async def fetch_copy(self) -> SinkCopy:
        """Every record and checkpoint the stream holds under this sink's subjects.

        Reads the stream message by message from its first to its last sequence (one
        request each: fine for an audit stream's verify, not a bulk export).

        Raises:
            AuditError: ``audit.sink_unavailable`` when NATS is unreachable or the stream
                is missing; a message that is not a record or checkpoint.
        """
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        records: list[AuditRecord] = []
        checkpoints: list[Checkpoint] = []
        prefix = f"{self.subject_prefix}."
        try:
            js = await self._jetstream()
            info = await js.stream_info(self.stream)
            first, last = info.state.first_seq, info.state.last_seq
            for seq in range(first, last + 1) if last else ():
                try:
                    message = await js.get_msg(self.stream, seq)
                except NotFoundError:  # deleted from the stream: nothing to compare
                    continue
                subject = message.subject or ""
                if subject == self.checkpoint_subject:
                    checkpoints.append(Checkpoint.from_dict(json.loads(message.data or b"")))
                elif subject.startswith(prefix):
                    records.append(AuditRecord.from_dict(json.loads(message.data or b"")))
        except (TimeoutError, NatsError, OSError) as exc:
            await self.aclose()
            raise _unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise AuditError(f"{self.name}: a message in the stream is not JSON: {exc}") from exc
        return SinkCopy.of(self.name, records, checkpoints)

    async def aclose(self) -> None:
        """Close the NATS connection, if any."""
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            try:
                await client.close()
            except (TimeoutError, OSError):
                return


def sink_from_url(url: str) -> Sink:
    """The sink a URL names: ``nats://host:port[/STREAM][?subjects=PREFIX]`` or ``http(s)://...``.

    Raises:
        AuditError: ``config.invalid`` (bad input, exit 2): the scheme is neither NATS
            nor HTTP.
    """
    if url.startswith("nats://"):
        address, stream, subjects = _nats_parts(url)
        return NatsSink(
            f"nats://{address}",
            stream=stream,
            subject_prefix=subjects,
            name=sink_name(url),
        )
    if url.startswith(("http://", "https://")):
        return HttpSink(url)
    raise _unknown_scheme(url)


def sink_name(url: str) -> str:
    """The name (and shipping-cursor key) of the sink a URL names, without opening it.

    Raises:
        AuditError: ``config.invalid``: the scheme is neither NATS nor HTTP.
    """
    if url.startswith("nats://"):
        address, stream, subjects = _nats_parts(url)
        shown = f"nats:{_shown_url(f'nats://{address}')}/{stream}"
        return shown if subjects == _DEFAULT_SUBJECTS else f"{shown}?subjects={subjects}"
    if url.startswith(("http://", "https://")):
        return f"http:{_shown_url(url)}"
    raise _unknown_scheme(url)


_DEFAULT_SUBJECTS = "aifr.audit"


def _nats_parts(url: str) -> tuple[str, str, str]:
    """``(host:port, stream, subject prefix)`` of ``nats://host:port[/STREAM][?subjects=P]``.

    Raises:
        AuditError: ``config.invalid``: the subject prefix is not a NATS subject.
    """
    rest, _, query = url.removeprefix("nats://").partition("?")
    address, _, stream = rest.partition("/")
    subjects = _DEFAULT_SUBJECTS
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key == "subjects" and value:
            subjects = value
    if _SUBJECT_TOKEN.search(subjects) or subjects.startswith(".") or subjects.endswith("."):
        raise AuditError(
            f"audit.sink_url: subjects={subjects!r} is not a NATS subject prefix",
            code=ErrorCode.CONFIG_INVALID,
        )
    return address, stream or "AIFR_AUDIT", subjects


def _unknown_scheme(url: str) -> AuditError:
    return AuditError(
        f"audit.sink_url {_shown_url(url)!r}: use nats://host:port[/STREAM] or an http(s):// URL",
        code=ErrorCode.CONFIG_INVALID,
        url=_shown_url(url),
    )
