"""``fast_init``: a frozen dataclass built through its slots, exactly as ``@dataclass`` builds it."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import InitVar, dataclass, field

import pytest

from aifr.audit.record import AuditEvent, AuditRecord, ChainHead
from aifr.frozen import fast_init
from aifr.invocation.options import CallOptions
from aifr.invocation.result import Result, Timing
from aifr.policy.decision import PolicyDecision, PolicyRequest
from aifr.workflows.ports import Completion, RunFinish, RunRecord, StepKey, StepRecord

REWRITTEN = (
    AuditEvent,
    AuditRecord,
    ChainHead,
    CallOptions,
    Result,
    Timing,
    PolicyDecision,
    PolicyRequest,
    Completion,
    RunFinish,
    RunRecord,
    StepKey,
    StepRecord,
)


def _shape(init: object) -> list[tuple[str, object, bool]]:
    """Each parameter's name and kind, and whether it has a default (factories show as one)."""
    parameters = inspect.signature(init).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters]


@pytest.mark.parametrize("cls", REWRITTEN, ids=lambda cls: cls.__name__)
def test_a_rewritten_record_takes_the_arguments_its_dataclass_init_took(cls: type) -> None:
    original = cls.__dataclass_init__  # type: ignore[attr-defined]
    assert cls.__init__ is not original
    assert _shape(cls.__init__) == _shape(original)
    plain = {
        name: p.default
        for name, p in inspect.signature(original).parameters.items()
        if p.default is not inspect.Parameter.empty and not repr(p.default).startswith("<factory")
    }
    rewritten = inspect.signature(cls.__init__).parameters
    assert {name: rewritten[name].default for name in plain} == plain


def _sample_class(*, rewritten: bool) -> type:
    """One record with every kind of field, built by ``fast_init`` or by the dataclass."""

    @dataclass(frozen=True, slots=True)
    class Sample:
        name: str
        count: int = 3
        tags: list[str] = field(default_factory=list)
        note: str = field(default="kept", init=False)
        seen: list[str] = field(default_factory=lambda: ["made"], init=False)
        label: str = field(default="", kw_only=True)
        shout: str = field(init=False, default="")

        def __post_init__(self) -> None:
            object.__setattr__(self, "shout", self.name.upper())

    return fast_init(Sample) if rewritten else Sample


_Sample = _sample_class(rewritten=True)
_Reference = _sample_class(rewritten=False)


def _fields(value: object) -> dict[str, object]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("a",), {}),
        (("a", 5), {}),
        (("a", 5, ["x"]), {"label": "l"}),
        ((), {"name": "b", "tags": ["y"], "count": 0}),
    ],
)
def test_it_builds_what_the_dataclass_builds(args: tuple[object, ...], kwargs: dict) -> None:
    assert _fields(_Sample(*args, **kwargs)) == _fields(_Reference(*args, **kwargs))
    assert _Sample(*args, **kwargs) == _Sample(*args, **kwargs)
    assert hash(ChainHead(3, "h")) == hash((3, "h"))  # the dataclass's hash of its fields


def test_each_instance_gets_its_own_factory_value() -> None:
    first, second = _Sample("a"), _Sample("a")
    assert first.tags == [] and first.tags is not second.tags
    assert first.seen == ["made"] and first.seen is not second.seen


def test_it_stays_frozen_and_copies_replaces_and_pickles() -> None:
    sample = _Sample("a", 1, ["t"], label="l")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.count = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del sample.name  # type: ignore[misc]
    assert not hasattr(sample, "__dict__")
    assert dataclasses.replace(sample, count=9) == _Sample("a", 9, ["t"], label="l")
    assert copy.deepcopy(sample) == sample
    assert repr(sample) == repr(_Reference("a", 1, ["t"], label="l"))
    key = StepKey("run-1", "s0", 2, is_undo=True)  # pickled by name: a module-level record
    assert pickle.loads(pickle.dumps(key)) == key  # noqa: S301  # our own bytes


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing 1 required positional argument: 'name'"),
        (("a", 1, [], "x"), {}, "takes from 2 to 4 positional arguments"),
        (("a",), {"colour": "red"}, "unexpected keyword argument 'colour'"),
        (("a",), {"note": "n"}, "unexpected keyword argument 'note'"),
    ],
)
def test_bad_arguments_fail_as_they_did(
    args: tuple[object, ...], kwargs: dict, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        _Sample(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        _Reference(*args, **kwargs)


def test_it_refuses_what_it_cannot_rewrite() -> None:
    @dataclass(frozen=True)
    class Unslotted:
        x: int

    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        x: int
        scale: InitVar[int] = 1

    for cls in (Unslotted, Mutable, WithInitVar, int):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
