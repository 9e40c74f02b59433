"""The public API: ``aifr.__all__`` matches the real exports, all documented."""

from __future__ import annotations

import importlib
import subprocess
import sys

import aifr


def test_all_is_sorted_and_every_name_exists_and_is_documented() -> None:
    assert sorted(aifr.__all__) == list(aifr.__all__) or sorted(aifr.__all__, key=str.lower)
    for name in aifr.__all__:
        value = getattr(aifr, name)
        assert value.__doc__, f"aifr.{name} has no docstring"


def test_subpackages_export_what_they_declare() -> None:
    for package in ("aifr.capabilities", "aifr.config", "aifr.errors"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert hasattr(module, name), f"{package}.{name} is declared but missing"


def test_help_imports_no_heavy_optional_dependency() -> None:
    code = (
        "import sys\n"
        "from aifr.cli.main import app\n"
        "heavy = {'torch', 'psycopg', 'playwright', 'sentence_transformers'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
