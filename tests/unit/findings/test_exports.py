"""The findings packages export what they declare, each name documented."""

from __future__ import annotations

import importlib
import inspect

import pytest


@pytest.mark.parametrize(
    "package", ["aifr.findings", "aifr.findings.parsers", "aifr.findings.exporters"]
)
def test_every_declared_name_exists_and_has_a_docstring(package: str) -> None:
    module = importlib.import_module(package)
    assert list(module.__all__) == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{package}.{name} has no docstring"
