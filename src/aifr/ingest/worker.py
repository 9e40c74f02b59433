"""The sandboxed child: ``aifr.ingest.worker`` (under ``python -I -B``) parses files or extracts archives.

It reads one JSON request on stdin and writes one JSON answer on stdout, and does
nothing else: the parent (:mod:`aifr.ingest.isolation`) starts it through the process
sandbox with CPU, memory, file-size and process limits, so a hostile file or archive
that blows up the parser or the inflater kills only this child. For ``extract`` the
working directory (entered by the sandbox) is the empty destination.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import JsonValue

from aifr.ingest.archives import ArchiveQuotas, extract_archive
from aifr.ingest.chunk import ChunkPlanner
from aifr.ingest.parsing import limits_from_json, parse_file, parsed_to_json
from aifr.ingest.sanitize import Sanitizer

__all__ = ["main", "serve"]


def serve(request: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Answer one request (``parse`` or ``extract``)."""
    if request.get("op") == "extract":
        quotas = request["quotas"]
        assert isinstance(quotas, dict)  # noqa: S101  # the parent's own request
        report = extract_archive(
            Path(str(request["archive"])),
            Path.cwd(),
            ArchiveQuotas(
                max_total_bytes=int(str(quotas["max_total_bytes"])),
                max_files=int(str(quotas["max_files"])),
                max_ratio=float(str(quotas["max_ratio"])),
                max_depth=int(str(quotas["max_depth"])),
            ),
        )
        return {
            "extracted": list(report.extracted),
            "refused": [[r.path, r.reason, r.detail] for r in report.refused],
        }
    limits = request["limits"]
    files = request["files"]
    assert isinstance(limits, dict) and isinstance(files, list)  # noqa: S101  # ours
    planner = ChunkPlanner(limits_from_json(limits))
    sanitizer = Sanitizer()
    repo = str(request["repo"])
    max_bytes = int(str(request["max_bytes"]))
    results: list[JsonValue] = []
    for item in files:
        assert isinstance(item, list)  # noqa: S101  # ours
        path, absolute = str(item[0]), Path(str(item[1]))
        parsed = parse_file(
            repo, path, absolute, planner=planner, sanitizer=sanitizer, max_bytes=max_bytes
        )
        results.append(parsed_to_json(parsed))
    return {"results": results}


def main() -> None:
    """Read the request from stdin, write the answer to stdout."""
    request = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(serve(request)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
