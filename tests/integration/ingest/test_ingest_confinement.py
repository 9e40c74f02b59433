"""The ingestion child under the process sandbox's backends, on the real kernel.

A hostile parser (or an archive that exploits the inflater) runs as the ingest child
does (:meth:`SandboxedWorker.run_child`, the path ``parse`` and ``extract`` take). Under
each backend available here it cannot read a planted secret outside the workspace or
the state database inside it, cannot write outside its extraction folder and has no
network; with the backend off (``none``) the same child does all of it, so each test
tests something.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.app import build_ingest_pipeline
from aifr.config import load_settings
from aifr.config.project import init_project
from aifr.ingest.archives import ArchiveQuotas
from aifr.ingest.enumerate import WorkspaceEnumerator
from aifr.ingest.isolation import InProcessWorker, SandboxedWorker
from aifr.ingest.pipeline import IngestPipeline
from aifr.invocation.sandbox_backends import BACKENDS, detect
from archive_kit import GOOD, zip_with
from pipeline_kit import CountingEmbedder, MemoryChunkIndex

_HOSTILE = r"""
import json, socket, sys
secret, state_db, planted, extracted, own, port = sys.argv[1:7]
out = {}
def attempt(name, action):
    try:
        out[name] = action()
    except OSError as exc:
        out[name] = "refused: " + type(exc).__name__
def write(path):
    with open(path, "w") as handle:
        handle.write("planted")
    return "written"
def connect():
    socket.create_connection(("127.0.0.1", int(port)), timeout=3).close()
    return "connected"
attempt("secret", lambda: open(secret).read())
attempt("state_db", lambda: open(state_db).read())
attempt("write_outside", lambda: write(planted))
attempt("write_scratch", lambda: write(extracted))
attempt("read_workspace", lambda: open(own).read())
attempt("network", connect)
print(json.dumps(out))
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    status = detect(request.param)
    if status.refusal is not None:
        pytest.skip(status.refusal)
    return str(request.param)


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A project used as the workspace (with its state database), a secret beside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-SECRET\n")
    project = tmp_path / "proj"
    init_project(project)
    (project / ".aifr" / "aifr.db").write_text("STATE-DB\n")
    (project / "src").mkdir()
    (project / "src" / "app.py").write_text(GOOD)
    scratch = project / ".aifr" / "tmp" / "aifr-ingest-test" / "archive-0"
    scratch.mkdir(parents=True)
    return {"outside": outside, "project": project, "scratch": scratch}


def _worker(project: Path, mode: str) -> SandboxedWorker:
    config = project / "aifr.toml"
    text = re.sub(r'(?m)^sandbox = "[a-z]+"$', f'sandbox = "{mode}"', config.read_text())
    config.write_text(text)
    settings = load_settings(project, require_project=True)
    assert settings.exec.sandbox == mode
    worker = build_ingest_pipeline(
        settings, index=MemoryChunkIndex(), embedder=CountingEmbedder()
    ).worker  # type: ignore[arg-type]
    assert isinstance(worker, SandboxedWorker)
    return worker


def _hostile(world: dict[str, Path], mode: str, port: int) -> tuple[dict[str, str], str]:
    project = world["project"]
    done = _worker(project, mode).run_child(
        [
            sys.executable, "-I", "-S", "-c", _HOSTILE,
            str(world["outside"] / "secret.txt"), str(project / ".aifr" / "aifr.db"),
            str(world["outside"] / "planted.txt"), str(world["scratch"] / "member.py"),
            str(project / "src" / "app.py"), str(port),
        ],
        cwd=world["scratch"],
        reads=[project],
        writes=[world["scratch"]],
        stdin=b"",
        output_bytes=1 << 20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.sandbox


def test_the_ingest_child_is_confined_by_each_backend(
    world: dict[str, Path], backend: str, listener: int
) -> None:
    seen, used = _hostile(world, backend, listener)
    assert used == backend
    assert seen["secret"].startswith("refused")
    assert seen["state_db"].startswith("refused")
    assert seen["write_outside"].startswith("refused")
    assert seen["network"].startswith("refused")
    assert not (world["outside"] / "planted.txt").exists()
    assert seen["write_scratch"] == "written"
    assert seen["read_workspace"] == GOOD


def test_with_the_backend_off_the_same_child_escapes(world: dict[str, Path], listener: int) -> None:
    seen, used = _hostile(world, "none", listener)
    assert used == "none"
    assert seen == {
        "secret": "OUTSIDE-SECRET\n",
        "state_db": "STATE-DB\n",
        "write_outside": "written",
        "write_scratch": "written",
        "read_workspace": GOOD,
        "network": "connected",
    }
    assert (world["outside"] / "planted.txt").read_text() == "planted"


def test_ingestion_under_each_backend_parses_and_extracts(
    world: dict[str, Path], backend: str
) -> None:
    workspace = world["project"]
    zip_with(workspace / "vendor.zip", {"lib/ok.py": GOOD.encode()})
    worker = _worker(workspace, backend)
    assert worker.mode == backend
    assert worker.sandbox(1).status.backend == backend
    index = MemoryChunkIndex()
    pipeline = IngestPipeline(
        embedder=CountingEmbedder(),
        index=index,
        enumerator=WorkspaceEnumerator(),
        worker=worker,
        scratch_dir=workspace / ".aifr" / "tmp",
    )
    report = pipeline.ingest(workspace, "app")
    assert [s for s in report.skipped if s.reason == "sandbox_failed"] == []
    assert {"src/app.py", "vendor.zip!/lib/ok.py"} <= set(index.files("app"))
    plain = MemoryChunkIndex()
    IngestPipeline(
        embedder=CountingEmbedder(),
        index=plain,
        enumerator=WorkspaceEnumerator(),
        worker=InProcessWorker(max_file_bytes=1 << 20, quotas=ArchiveQuotas()),
    ).ingest(workspace, "app")
    assert index.chunks == plain.chunks


def test_ingest_sandbox_false_runs_no_child(world: dict[str, Path]) -> None:
    project = world["project"]
    config = project / "aifr.toml"
    config.write_text(config.read_text() + "\n[ingest]\nsandbox = false\n")
    settings = load_settings(project, require_project=True)
    pipeline = build_ingest_pipeline(
        settings, index=MemoryChunkIndex(), embedder=CountingEmbedder()
    )  # type: ignore[arg-type]
    assert isinstance(pipeline.worker, InProcessWorker)


_NO_NAMESPACES = r"""
import ctypes, json, sys
from pathlib import Path
from aifr.errors import SandboxRefusalError
from aifr.ingest.archives import ArchiveQuotas
from aifr.ingest.isolation import SandboxedWorker
from aifr.invocation import seccomp

class Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

# aifr's own filter refuses namespaces to this process and to bwrap, as many hosts do
bpf = seccomp.filter_program(network=False)
buffer = ctypes.create_string_buffer(bpf, len(bpf))
prog = Prog(len(bpf) // 8, ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, filter
worker = SandboxedWorker(max_file_bytes=1 << 20, quotas=ArchiveQuotas(), mode="bubblewrap")
try:
    worker.extract(Path(sys.argv[1]), Path(sys.argv[2]))
except SandboxRefusalError as exc:
    print(json.dumps({"rule": exc.rule, "message": exc.message}))
"""


def test_where_namespaces_are_denied_a_configured_bubblewrap_refuses_ingestion(
    world: dict[str, Path],
) -> None:
    if detect("bubblewrap").bwrap is None:
        pytest.skip("bwrap is not installed")
    archive = zip_with(world["project"] / "vendor.zip", {"lib/ok.py": GOOD.encode()})
    done = subprocess.run(
        [sys.executable, "-c", _NO_NAMESPACES, str(archive), str(world["scratch"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    refused = json.loads(done.stdout)
    assert refused["rule"] == "sandbox_unavailable"
    assert "bwrap cannot create namespaces" in refused["message"]
    assert list(world["scratch"].iterdir()) == []  # no child ran, nothing extracted


def test_the_ingest_child_cannot_start_another_process_under_each_backend(
    world: dict[str, Path], backend: str
) -> None:
    worker = _worker(world["project"], backend)
    fork = "import os\ntry:\n    os.fork()\n    print('forked')\nexcept OSError as exc:\n    print(exc.errno)"
    done = worker.run_child(
        [sys.executable, "-I", "-S", "-c", fork],
        cwd=world["scratch"],
        reads=[world["project"]],
        writes=[world["scratch"]],
        stdin=b"",
        output_bytes=1 << 20,
    )
    if done.process_limit != "cgroup":
        pytest.skip(f"no pids cgroup here (process_limit={done.process_limit})")
    assert done.sandbox == backend
    assert done.stdout == b"11\n", done.stderr  # EAGAIN: the helpers do not widen the limit


def test_archive_members_are_parsed_when_the_scratch_folder_is_reached_by_a_symlink(
    world: dict[str, Path], backend: str, tmp_path: Path
) -> None:
    workspace = world["project"]
    zip_with(workspace / "vendor.zip", {"lib/ok.py": GOOD.encode()})
    link = tmp_path / "linked"
    link.symlink_to(workspace)
    index = MemoryChunkIndex()
    report = IngestPipeline(
        embedder=CountingEmbedder(),
        index=index,
        enumerator=WorkspaceEnumerator(),
        worker=_worker(workspace, backend),
        scratch_dir=link / ".aifr" / "tmp",
    ).ingest(workspace, "app")
    assert [s for s in report.skipped if s.path.startswith("vendor.zip")] == []
    assert "vendor.zip!/lib/ok.py" in index.files("app")
