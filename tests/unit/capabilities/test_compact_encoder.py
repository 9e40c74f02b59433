"""One C encoder kept and called per value: the very text ``json.JSONEncoder`` writes."""

from __future__ import annotations

import enum
import json
import threading

import pytest

from aifr.capabilities import canonical_json, compact_encoder


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


VALUES: list[object] = [
    None,
    True,
    0,
    -0.0,
    1e16,
    1.5e-7,
    2**80,
    'é \u2028 \x00 " \\ \U0001f600',
    _Colour.RED,
    _Level.HIGH,
    {"b": [1, (2, 3)], "a": {"z": None, "é": "x", "A": 1.0}},
    {_Colour.RED: 1, "0": [{}, []]},
    [],
    {},
    "",
]


@pytest.mark.parametrize("sort_keys", [True, False])
@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("allow_nan", [True, False])
def test_it_writes_what_the_json_encoder_writes(
    sort_keys: bool, ensure_ascii: bool, allow_nan: bool
) -> None:
    reference = json.JSONEncoder(
        sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan
    )
    encode = compact_encoder(sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan)
    for value in VALUES:
        assert encode(value) == reference.encode(value)


def test_canonical_json_is_sorted_compact_and_utf8() -> None:
    assert canonical_json({"b": "é", "a": [1, 2.5]}) == '{"a":[1,2.5],"b":"é"}'


def test_what_json_cannot_hold_fails_as_the_json_encoder_fails() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        canonical_json({"a": loop})
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json([float("nan")])
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"a": object()})
    assert canonical_json({"after": "failures"}) == '{"after":"failures"}'  # nothing left over


def test_threads_share_one_encoder() -> None:
    results: list[bool] = []

    def encode_many(n: int) -> None:
        value = {"thread": n, "items": list(range(50))}
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        results.append(all(canonical_json(value) == expected for _ in range(2000)))

    threads = [threading.Thread(target=encode_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4
