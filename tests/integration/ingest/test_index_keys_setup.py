"""The composition root's index: key created once, escrow only when asked, sources in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aifr.app import build_app, open_knowledge_index
from aifr.config import init_project, load_settings
from aifr.errors import ErrorCode, IngestError
from aifr.ingest import INDEX_KEY_NAME, generate_index_key, resolve_index_key, unwrap_escrow
from aifr.invocation import EnvSecretProvider
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex
from keyring_kit import memory_keyring


@pytest.fixture
def project(tmp_path: Path, clean_env: dict[str, str]) -> Path:
    init_project(tmp_path)
    return tmp_path


def _configure(project: Path, text: str) -> None:
    config = project / "aifr.toml"
    config.write_text(config.read_text() + "\n[index]\n" + text)


def test_the_first_ingest_creates_a_private_key_file_and_no_escrow(project: Path) -> None:
    with pytest.raises(IngestError) as caught:
        open_knowledge_index(load_settings(project))
    assert caught.value.code is ErrorCode.INGEST_REPO_NOT_FOUND
    index, _ = open_knowledge_index(load_settings(project), create=True)
    assert isinstance(index, SqliteChunkIndex)
    index.close()
    key_file = project / ".aifr" / "keys" / "index.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not (project / ".aifr" / "index" / "key.escrow").exists()
    reopened, _ = open_knowledge_index(load_settings(project))
    assert isinstance(reopened, SqliteChunkIndex)
    reopened.close()


def test_with_a_recovery_key_the_escrow_opens_the_index(project: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (project / "recovery.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _configure(project, 'escrow_public_key = "recovery.pub"\n')
    index, embedder = open_knowledge_index(load_settings(project), create=True)
    index.close()
    (project / ".aifr" / "keys" / "index.key").unlink()  # the key is lost
    recovered = unwrap_escrow(project / ".aifr" / "index" / "key.escrow", private)
    key = resolve_index_key([EnvSecretProvider({INDEX_KEY_NAME: recovered})])
    SqliteChunkIndex(
        project / ".aifr" / "index" / "index.db",
        key,
        model_id=embedder.model_id,
        dimension=embedder.dimension,
    ).close()


def test_a_key_only_in_the_keyring_is_used_and_none_is_written_to_disk(project: Path) -> None:
    _configure(project, 'key_sources = ["keyring"]\nkeyring_service = "aifr-test"\n')
    with memory_keyring("aifr-test", {INDEX_KEY_NAME: generate_index_key()}):
        index, _ = open_knowledge_index(load_settings(project), create=True)
        index.close()
    assert not (project / ".aifr" / "keys" / "index.key").exists()


def test_without_the_file_source_a_missing_key_is_never_created(project: Path) -> None:
    _configure(project, 'key_sources = ["env"]\n')
    with pytest.raises(IngestError) as caught:
        open_knowledge_index(load_settings(project), create=True)
    assert caught.value.code is ErrorCode.INGEST_KEY_MISSING
    assert not (project / ".aifr" / "keys" / "index.key").exists()


def test_agents_cannot_read_a_key_file_kept_outside_the_state_folder(project: Path) -> None:
    _configure(project, 'key_file = "keys/index.key"\n')
    index, _ = open_knowledge_index(load_settings(project), create=True)
    index.close()
    key_text = (project / "keys" / "index.key").read_text().strip()
    app = build_app(project)
    try:
        result = app.runtime.invoke("io.fs.read_file", {"path": "keys/index.key"}, "agent")
    finally:
        app.close()
    assert result.error is not None
    assert result.error.code is ErrorCode.EXECUTION_REFUSED
    assert key_text not in json.dumps(result.to_dict())
