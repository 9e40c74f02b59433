"""The standard library built over a fresh project folder, called without the runtime.

Shared by tests/unit/stdlib, tests/integration/stdlib and tests/reliability: each
capability is called the way the runtime does (validate_inputs, then the handler with a
CallInfo when it asks for one).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import stat
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aifr.capabilities import CallInfo, Capability
from aifr.invocation.sandbox import CommandResult, Sandbox
from aifr.stdlib import build_stdlib


@dataclass
class Lib:
    """A built standard library over ``root`` (the project) with state in ``root/.aifr``."""

    root: Path
    caps: dict[str, Capability] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / ".aifr"

    def call(
        self,
        capability_id: str,
        inputs: Mapping[str, Any],
        *,
        key: str | None = None,
        principal: str = "alice",
    ) -> Any:
        cap = self.caps[capability_id]
        kwargs = cap.validate_inputs(inputs)
        if cap.call_info_param is not None:
            kwargs[cap.call_info_param] = CallInfo(
                request_id="r-1", principal=principal, idempotency_key=key
            )
        assert cap.handler is not None
        return cap.validate_output(cap.handler(**kwargs))


def build_lib(root: Path, **overrides: Any) -> Lib:
    """The stdlib over ``root`` with permissive test settings unless overridden."""
    root.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "project_dir": root,
        "state_dir": root / ".aifr",
        "fs_roots": [root],
        "environ": {},
        # the interpreter tests run as commands lives outside /usr (pyenv): readable
        "exec_read_paths": [Path(sys.base_prefix), Path(sys.prefix)],
    }
    settings.update(overrides)
    lib = Lib(root=root)
    lib.caps = {c.id: c for c in build_stdlib(**settings)}
    return lib


def run_in(sandbox: Sandbox, argv: list[str], directory: Path) -> CommandResult:
    """Run ``argv`` through ``sandbox`` with ``directory`` as its working folder."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sandbox.run(argv, cwd_fd=fd)
    finally:
        os.close(fd)


def snapshot(path: Path) -> tuple[str, int, int] | None:
    """Content hash, mode and mtime (ns) of a file, or None when it is absent."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (
        hashlib.sha256(path.read_bytes()).hexdigest(),
        stat.S_IMODE(info.st_mode),
        info.st_mtime_ns,
    )


def tree(root: Path) -> dict[str, tuple[str, int, int] | None]:
    """Snapshot of every file below ``root`` (outside ``.aifr``), keyed by relative path."""
    found: dict[str, tuple[str, int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == ".aifr":
            continue
        found[str(relative)] = snapshot(path) if path.is_file() else None
    return found


class _Handler(BaseHTTPRequestHandler):
    """Routes: /ok, /echo, /count, /big, /chunked, /gzip-bomb, /loop, /redirect?to=URL&status=N,
    /bin, /charset?c=NAME (text declared in that charset), /stall (answers only once the server is released, at most 10 s), /stall-answers (how
    many /stall requests were answered) and /drip (one byte per 0.1 s).
    """

    def log_message(self, fmt: str, *args: Any) -> None:  # keep test output quiet
        return

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}) and "Transfer-Encoding" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stall(self) -> None:
        self.server.release.wait(timeout=10)  # type: ignore[attr-defined]
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.stall_answers += 1  # type: ignore[attr-defined]
        self._send(200, b"late", {"Content-Type": "text/plain"})

    def _stall_answers(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            answers = self.server.stall_answers  # type: ignore[attr-defined]
        self._send(200, str(answers).encode(), {"Content-Type": "text/plain"})

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            self.wfile.write(b"z")
            self.wfile.flush()
            if self.server.release.wait(timeout=0.1):  # type: ignore[attr-defined]
                return

    def _charset(self) -> None:
        charset = dict(parse_qsl(urlsplit(self.path).query))["c"]
        self._send(200, b"hello", {"Content-Type": f"text/plain; charset={charset}"})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        timed = {
            "/stall": self._stall,
            "/stall-answers": self._stall_answers,
            "/drip": self._drip,
            "/charset": self._charset,
        }
        if url.path in timed:
            timed[url.path]()
        elif url.path == "/ok":
            self._send(
                200,
                b"hello",
                {"Content-Type": "text/plain; charset=utf-8", "Set-Cookie": "sid=abc"},
            )
        elif url.path == "/echo":
            seen = {
                "method": self.command,
                "headers": dict(self.headers.items()),
                "body": self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(),
            }
            self._send(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif url.path == "/big":
            self._send(200, b"x" * int(query.get("n", "100000")), {"Content-Type": "text/plain"})
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 16384
            # The client under test hangs up once the body passes its size limit.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                for _ in range(int(query.get("chunks", "64"))):
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/gzip-bomb":
            body = gzip.compress(b"\0" * 20_000_000)
            self._send(200, body, {"Content-Type": "text/plain", "Content-Encoding": "gzip"})
        elif url.path == "/count":
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.hits += 1  # type: ignore[attr-defined]
                hits = self.server.hits  # type: ignore[attr-defined]
            self._send(200, str(hits).encode(), {"Content-Type": "text/plain"})
        elif url.path == "/bin":
            self._send(200, bytes(range(256)), {"Content-Type": "application/octet-stream"})
        elif url.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif url.path == "/redirect":
            self._send(int(query.get("status", "302")), b"", {"Location": query["to"]})
        else:
            self._send(404, b"not found", {"Content-Type": "text/plain"})

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET


@contextmanager
def serve_http() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hits = 0  # type: ignore[attr-defined]
    server.stall_answers = 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
