"""The idempotency request digest is the digest of a canonical document, built by hand."""

from __future__ import annotations

import pytest

from aifr.capabilities import digest
from aifr.invocation.context import RequestContext
from aifr.invocation.idempotency import _request_digest
from aifr.invocation.records import Call


@pytest.mark.parametrize(
    "capability_id", ["files.write", 'odd "quoted" \\ id', "unicodé.ünï", "tab\tand\nnewline"]
)
def test_the_request_digest_equals_the_digest_of_its_canonical_document(
    capability_id: str,
) -> None:
    call = Call(
        ref=capability_id,
        inputs={"a": 1},
        principal="p",
        context=RequestContext(principal="p", capability_ref=capability_id),
        roles=frozenset(),
        on_behalf_of=(),
        idempotency_key="k",
        approval_id=None,
        workflow_id=None,
        run_id=None,
        step_id=None,
        timeout_s=None,
        hooks=None,
        digest="ab" * 32,
    )

    assert _request_digest(call) == digest({"capability_id": capability_id, "inputs": "ab" * 32})
