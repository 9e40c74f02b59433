"""Running the installed ``aifr`` command on a project, as a user's shell does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
from psycopg import sql


def run_cli(
    aifr_bin: str, project: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``aifr ARGS -p PROJECT`` with stdout and stderr piped and ``COLUMNS=40``, as a script runs it."""
    return subprocess.run(
        [aifr_bin, *args, "-p", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "COLUMNS": "40"},
        check=False,
    )


def pg_rows(url: str, query: str) -> list[tuple[object, ...]]:
    """Run ``query`` in the schema a :func:`pg_url` URL names."""
    dsn, schema = url.rsplit("schema=", 1)
    with psycopg.connect(dsn.rstrip("?&"), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description is not None else []


def init_project(
    aifr_bin: str, directory: Path, env: dict[str, str], files: dict[str, str]
) -> Path:
    """``aifr init DIRECTORY``, then ``files`` (relative path: text) written over it."""
    subprocess.run([aifr_bin, "init", str(directory)], check=True, capture_output=True, env=env)
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory
