"""Request and global context: state, snapshot/restore, services, shutdown hooks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aifr.errors import ConfigError, ErrorCode, InputValidationError
from aifr.invocation import GlobalContext, Phase, RequestContext, current_request


def test_snapshot_then_restore_round_trips_exactly() -> None:
    context = RequestContext(principal="alice", capability_ref="demo.echo@1", run_id="r1")
    context.set("attempt", 2)
    context.set("notes", {"a": [1, 2.5, None, True, "x"]})
    context.enter(Phase.RESOLVED)
    context.enter(Phase.VALIDATED)
    snapshot = context.snapshot()
    restored = RequestContext.restore(json.loads(json.dumps(snapshot)))
    assert restored.snapshot() == snapshot
    assert restored == context
    assert restored.phase is Phase.VALIDATED
    assert restored.get("notes") == {"a": [1, 2.5, None, True, "x"]}


def test_snapshot_is_a_copy_that_later_changes_do_not_touch() -> None:
    context = RequestContext(principal="alice")
    context.set("k", [1])
    snapshot = context.snapshot()
    context.set("k", [2])
    context.delete("k")
    assert RequestContext.restore(snapshot).get("k") == [1]


def test_values_are_copied_on_set_so_caller_mutation_does_not_leak_in() -> None:
    context = RequestContext(principal="alice")
    value = {"n": 1}
    context.set("v", value)
    value["n"] = 2
    assert context.get("v") == {"n": 1}


def test_a_value_that_is_not_json_is_refused_with_a_field_error() -> None:
    context = RequestContext(principal="alice")
    with pytest.raises(InputValidationError) as caught:
        context.set("when", object())  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INPUT_INVALID
    assert caught.value.errors[0].path == "when"


def test_restore_refuses_an_unknown_snapshot_version() -> None:
    snapshot = RequestContext(principal="alice").snapshot()
    snapshot["version"] = 99
    with pytest.raises(InputValidationError) as caught:
        RequestContext.restore(snapshot)
    assert caught.value.errors[0].path == "version"


def test_phase_times_record_each_phase_entered() -> None:
    context = RequestContext(principal="alice")
    for phase in (Phase.RESOLVED, Phase.DECIDED, Phase.DONE):
        context.enter(phase)
    assert list(context.phase_times) == ["received", "resolved", "decided", "done"]
    assert context.phase_times["done"] >= context.phase_times["received"]


def test_ids_default_to_fresh_values_and_trace_follows_request() -> None:
    first, second = RequestContext(principal="a"), RequestContext(principal="a")
    assert first.request_id != second.request_id
    assert first.trace_id == first.request_id
    assert RequestContext(principal="a", trace_id="t-1").trace_id == "t-1"


def test_no_request_is_current_outside_an_invocation() -> None:
    assert current_request() is None


def test_global_services_are_found_by_name_and_checked_by_type() -> None:
    context = GlobalContext(services={"clock": 42})
    context.register("name", "aifr")
    assert context.service("name", str) == "aifr"
    assert context.services() == ["clock", "name"]
    with pytest.raises(ConfigError):
        context.service("clock", str)
    with pytest.raises(ConfigError):
        context.service("missing")
    with pytest.raises(ConfigError):
        context.register("name", "again")


def test_global_config_is_frozen_all_the_way_down() -> None:
    context = GlobalContext(config={"limits": {"max": 3}, "hosts": ["a", "b"]})
    assert context.config["limits"]["max"] == 3
    assert context.config["hosts"] == ("a", "b")
    with pytest.raises(TypeError):
        context.config["limits"]["max"] = 4  # type: ignore[index]
    with pytest.raises(TypeError):
        context.config["new"] = 1  # type: ignore[index]


def test_shutdown_hooks_run_once_newest_first_and_a_failure_does_not_stop_the_rest() -> None:
    context = GlobalContext()
    ran: list[str] = []
    context.on_shutdown(lambda: ran.append("first"), name="first")

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    context.on_shutdown(broken, name="broken")
    context.on_shutdown(lambda: ran.append("last"), name="last")
    assert context.shutdown() == ["broken"]
    assert ran == ["last", "broken", "first"]
    assert context.shutdown() == []
    assert ran == ["last", "broken", "first"]
    assert context.is_shut_down


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    state=st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=6),
    phases=st.lists(st.sampled_from(list(Phase)), max_size=5),
    principal=st.text(min_size=1, max_size=20),
)
def test_any_context_snapshot_restores_to_an_equal_context(
    state: dict[str, object], phases: list[Phase], principal: str
) -> None:
    context = RequestContext(principal=principal, capability_ref="x.y@1", step_id="s")
    for key, value in state.items():
        context.set(key, value)  # type: ignore[arg-type]
    for phase in phases:
        context.enter(phase)
    snapshot = context.snapshot()
    restored = RequestContext.restore(json.loads(json.dumps(snapshot)))
    assert restored.snapshot() == snapshot
    assert restored == context
