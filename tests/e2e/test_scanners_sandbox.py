"""``scan.*`` run under the configured process sandbox: files and network of a fake scanner.

The fake ``nuclei`` is a real subprocess (a system Python script) that tries what a
compromised scanner would: read the user's SSH key and aifr's state database, write
outside the scans folder, and reach a local HTTP server that is not a target, directly
and through the egress proxy. Its report lands in the scans folder, where it may write.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aifr.invocation.sandbox_backends import detect

PYTHON = Path("/usr/bin/python3")
ALLOW_SCANS = """\
version: 1
rules:
  - id: allow-nuclei-for-alice
    when: {capability: scan.nuclei, principal: alice}
    decision: ALLOW
    reason: alice runs the weekly scan
"""
FAKE_NUCLEI = """\
#!/usr/bin/python3 -I
import json, socket, sys, urllib.error, urllib.request
from urllib.parse import urlsplit

args = sys.argv[1:]
out = args[args.index("-o") + 1]
targets = [args[i + 1] for i, a in enumerate(args) if a == "-u"]
report = {}

def attempt(name, action):
    try:
        report[name] = action()
    except urllib.error.HTTPError as exc:
        report[name] = exc.code
    except Exception as exc:
        report[name] = "error: " + type(exc).__name__

def read(path):
    with open(path, "rb") as f:
        return "read %d bytes" % len(f.read())

def write(path):
    with open(path, "w") as f:
        f.write("written by the scanner")
    return "written"

def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status

def direct(url):
    parts = urlsplit(url)
    socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    return "connected"

attempt("ssh_key", lambda: read(SSH_KEY))
attempt("state_db", lambda: read(STATE_DB))
attempt("write_outside", lambda: write(OUTSIDE))
attempt("registered_via_proxy", lambda: get(targets[0]))
attempt("unregistered_via_proxy", lambda: get(UNREGISTERED))
attempt("registered_direct", lambda: direct(targets[0]))
attempt("unregistered_direct", lambda: direct(UNREGISTERED))
with open("report.json", "w") as f:
    json.dump(report, f)
record = {"template-id": "fake-check", "info": {"name": "Fake", "severity": "low"},
          "host": targets[0], "matched-at": targets[0], "type": "http"}
with open(out, "w") as f:
    f.write(json.dumps(record) + "\\n")
"""

needs_sandbox = pytest.mark.skipif(
    detect("auto").backend == "none" or not PYTHON.exists(),
    reason="needs Landlock or bubblewrap, and /usr/bin/python3 for the fake scanner",
)


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]  # set below
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # the base's name
        """Quiet: the test reads the recorded paths instead."""


@pytest.fixture
def servers() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    """Two local HTTP servers: the registered target and one nobody registered."""
    started = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.paths = []  # type: ignore[attr-defined]  # the requests it served
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield started[0], started[1]
    for server in started:
        server.shutdown()
        server.server_close()


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_sandbox
def test_a_scanner_reads_and_writes_only_its_scans_folder_and_reaches_only_its_targets(
    aifr_bin: str,
    tmp_path: Path,
    clean_env: dict[str, str],
    servers: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    env = {**clean_env, "HOME": str(home)}
    root = tmp_path / "proj"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=env).returncode == 0
    (root / "policies" / "00-scans.yaml").write_text(ALLOW_SCANS)
    registered, unregistered = servers
    target = f"http://127.0.0.1:{registered.server_address[1]}/app"
    other = f"http://127.0.0.1:{unregistered.server_address[1]}/secret"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nuclei"
    outside = root / "written-by-scanner.txt"
    fake.write_text(
        FAKE_NUCLEI.replace("SSH_KEY", repr(str(home / ".ssh" / "id_ed25519")))
        .replace("STATE_DB", repr(str(root / ".aifr" / "aifr.db")))
        .replace("OUTSIDE", repr(str(outside)))
        .replace("UNREGISTERED", repr(other))
    )
    fake.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    added = run(
        aifr_bin, "resources", "add", f"http://127.0.0.1:{registered.server_address[1]}",
        "--project", "acme", cwd=root, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert (root / ".aifr" / "aifr.db").exists()

    done = run(
        aifr_bin, "call", "scan.nuclei", "project=acme", f'targets=["{target}"]',
        "--as", "alice", "--json", cwd=root, env=env,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads(done.stdout)["output"]
    assert output["sandbox"] != "none" and output["imported"] == 1
    report = json.loads((root / ".aifr" / "scans" / "report.json").read_text())
    assert str(report["ssh_key"]).startswith("error")
    assert str(report["state_db"]).startswith("error")
    assert str(report["write_outside"]).startswith("error") and not outside.exists()
    assert report["registered_via_proxy"] == 200
    assert registered.paths == ["/app"]  # type: ignore[attr-defined]  # set by the fixture
    assert report["unregistered_via_proxy"] == 403
    assert str(report["registered_direct"]).startswith("error")
    assert str(report["unregistered_direct"]).startswith("error")
    assert unregistered.paths == []  # type: ignore[attr-defined]  # set by the fixture
    refused = [c for c in output["connections"] if not c["allowed"]]
    assert [(c["host"], c["port"]) for c in refused] == [
        ("127.0.0.1", unregistered.server_address[1])
    ]
