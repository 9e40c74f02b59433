"""Running the installed ``aifr`` command on a project, as a user's shell does."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
