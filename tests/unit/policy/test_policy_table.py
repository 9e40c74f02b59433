"""The policy test table (tests/unit/policy/table) runs case by case under pytest."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.errors import PolicyError
from aifr.policy.cases import CaseResult, load_case_table, run_case_table

TABLE = Path(__file__).parent / "table" / "cases.yaml"


@pytest.fixture(scope="module")
def results() -> dict[str, CaseResult]:
    return {r.name: r for r in run_case_table(load_case_table(TABLE))}


def _names() -> list[str]:
    return [case.name for case, _ in load_case_table(TABLE).cases]


def test_the_table_holds_at_least_sixty_distinct_cases() -> None:
    names = _names()
    assert len(names) >= 60
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", _names())
def test_policy_table_case(results: dict[str, CaseResult], name: str) -> None:
    result = results[name]
    assert result.passed, f"{result.source}: {result.name}\n" + "\n".join(result.problems)


def test_a_table_grant_with_an_invalid_glob_or_constraint_is_refused_at_load(
    tmp_path: Path,
) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(
        "policy: policies\n"
        "grants:\n"
        "  - {principal: gina, capability: 'io.[fs'}\n"
        "  - {principal: gina, capability: 'io.*', constraints: {path: {regex: '('}}}\n"
        "cases:\n  - {name: n, principal: gina, capability: io.fs.read, expect: ALLOW}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_case_table(table)
    problems = info.value.details["errors"]
    assert isinstance(problems, list)
    assert [(p["line"], p["field"]) for p in problems if isinstance(p, dict)] == [
        (3, "grants[0].capability"),
        (4, "grants[1].constraints"),
    ]
    assert "unclosed '['" in info.value.message
    assert "invalid regex" in info.value.message


def test_a_wrong_approval_expiry_is_a_mismatch_naming_both_values(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(
        f"policy: {TABLE.parent / 'policies'}\n"
        "capabilities:\n  - {id: deploy.app, operation: EXECUTE, risk: HIGH}\n"
        "cases:\n"
        "  - {name: wrong expiry, principal: dave, capability: deploy.app, workflow: release-1,\n"
        "     expect: {decision: REQUIRE_APPROVAL, approval_ttl_s: 60}}\n"
    )
    (result,) = run_case_table(load_case_table(table))
    assert not result.passed
    assert result.problems == ("approval_ttl_s: expected 60.0, got 1800.0",)
    assert "approval_ttl_s=1800" in result.actual
