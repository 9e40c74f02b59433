"""The Finding JSON Schema (version 1.0.0), shipped as ``schemas/finding.json``.

The file is generated from :class:`~aifr.findings.models.Finding` by
:func:`build_finding_schema` and committed, so other tools can read it without Python;
a test fails when the model and the file drift apart. To rewrite the file after a
deliberate model change (and bump ``version`` when the change is not additive)::

    python -c "from aifr.findings.schema import write_finding_schema; write_finding_schema()"
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from aifr.findings.models import FINDING_SCHEMA_VERSION, Finding

__all__ = [
    "FINDING_SCHEMA_ID",
    "build_finding_schema",
    "load_finding_schema",
    "write_finding_schema",
]

FINDING_SCHEMA_ID = f"urn:aifr:schema:finding:{FINDING_SCHEMA_VERSION}"
_RESOURCE = "schemas/finding.json"


def build_finding_schema() -> dict[str, Any]:
    """The schema as generated from the model now (what the committed file must equal)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": FINDING_SCHEMA_ID,
        "version": FINDING_SCHEMA_VERSION,
        **Finding.model_json_schema(),
    }


def load_finding_schema() -> dict[str, Any]:
    """The committed ``schemas/finding.json`` as shipped in the package."""
    text = resources.files("aifr.findings").joinpath(_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def write_finding_schema() -> Path:
    """Rewrite ``schemas/finding.json`` from the model (a maintainer's step, never at run time)."""
    target = Path(__file__).with_name("schemas") / "finding.json"
    target.write_text(json.dumps(build_finding_schema(), indent=2) + "\n", encoding="utf-8")
    return target
