"""Test helpers for scale-out failure tests: a TCP relay and network namespaces.

A worker in its own network namespace reaches the host's PostgreSQL (which listens on
127.0.0.1 only) through a veth pair and a :class:`Relay` listening on the host side's
address; ``ip link set ... down`` on the host side cuts it off as a network partition
would (its TCP connections stall, nothing is reset).
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


class Relay:
    """Forwards every TCP connection accepted on ``(host, port)`` to ``target``."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server((host, 0))
        self.host, self.port = host, self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    """``ip ARGS``, output captured, never raising."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def _must(*args: str) -> None:
    done = ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Namespace:
    """A network namespace joined to the host by a veth pair, with a relay to PostgreSQL."""

    name: str
    host_link: str
    host_addr: str
    relay: Relay | None = None
    children: list[str] = field(default_factory=list)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def url(self, pg_url: str) -> str:
        """``pg_url`` (a 127.0.0.1 URL) pointed at this namespace's relay instead."""
        assert self.relay is not None  # set when made
        parts = urlsplit(pg_url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}{self.relay.host}:{self.relay.port}"))

    def cut(self) -> None:
        """Partition: the host side of the link goes down (packets are dropped)."""
        _must("link", "set", self.host_link, "down")

    def heal(self) -> None:
        """The link comes back; stalled connections go on."""
        _must("link", "set", self.host_link, "up")


def can_make_namespaces() -> str | None:
    """``None`` when this process may create network namespaces, else why not."""
    probe = f"aifrprobe{uuid.uuid4().hex[:6]}"
    made = ip("netns", "add", probe)
    if made.returncode != 0:
        return f"cannot create a network namespace here ({made.stderr.strip() or 'ip failed'})"
    ip("netns", "del", probe)
    return None


def _free_subnet() -> int:
    """A ``10.213.N.0/24`` no link on this host has an address in.

    A leftover link of a killed run holding the same addresses would take the replies
    to a new namespace, and its worker could never connect.
    """
    taken = ip("-4", "-o", "addr", "show").stdout
    free = [n for n in range(1, 251) if f" 10.213.{n}." not in taken]
    if not free:
        raise RuntimeError("no free 10.213.N.0/24 subnet for the test's namespaces")
    return random.choice(free)


@contextlib.contextmanager
def namespaces(count: int, pg_target: tuple[str, int]) -> Iterator[list[Namespace]]:
    """``count`` namespaces, each with a veth pair and a relay to ``pg_target``; removed after."""
    tag = uuid.uuid4().hex[:5]
    subnet = _free_subnet()
    made: list[Namespace] = []
    try:
        for n in range(count):
            name, host_link, inner_link = f"aifr{tag}n{n}", f"aifr{tag}h{n}", f"aifr{tag}v{n}"
            host_addr, inner_addr = f"10.213.{subnet}.{4 * n + 1}", f"10.213.{subnet}.{4 * n + 2}"
            _must("netns", "add", name)
            made.append(Namespace(name, host_link, host_addr))
            _must("link", "add", host_link, "type", "veth", "peer", "name", inner_link)
            _must("link", "set", inner_link, "netns", name)
            _must("addr", "add", f"{host_addr}/30", "dev", host_link)
            _must("link", "set", host_link, "up")
            _must("-n", name, "addr", "add", f"{inner_addr}/30", "dev", inner_link)
            _must("-n", name, "link", "set", inner_link, "up")
            _must("-n", name, "link", "set", "lo", "up")
            made[-1].relay = Relay(host_addr, pg_target)
        yield made
    finally:
        for space in made:
            if space.relay is not None:
                space.relay.close()
            ip("link", "del", space.host_link)
            ip("netns", "del", space.name)
