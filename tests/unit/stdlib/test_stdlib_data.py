"""data.*: parsing, JMESPath queries and declarative transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aifr.errors import ErrorCode, InputValidationError, SandboxRefusalError
from aifr.stdlib import build_data_capabilities

CAPS = {c.id: c for c in build_data_capabilities(max_input_bytes=1000)}


def call(capability_id: str, inputs: dict[str, Any]) -> Any:
    cap = CAPS[capability_id]
    assert cap.handler is not None
    return cap.validate_output(cap.handler(**cap.validate_inputs(inputs)))


def test_json_parse_returns_the_value() -> None:
    assert call("data.json.parse", {"text": '{"a": [1, 2.5, null, true]}'}) == {
        "value": {"a": [1, 2.5, None, True]}
    }


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(InputValidationError) as caught:
        call("data.json.parse", {"text": '{"a": }'})
    assert caught.value.errors[0].path == "text"
    assert "line 1 column 7" in caught.value.message


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    caps = {c.id: c for c in build_data_capabilities(max_input_bytes=10_000_000)}
    cap = caps["data.json.parse"]
    assert cap.handler is not None
    with pytest.raises(InputValidationError) as caught:
        cap.handler(text="[" * 200_000 + "]" * 200_000)
    assert caught.value.errors[0].code == "depth"


def test_inputs_over_the_cap_are_refused() -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        call("data.json.parse", {"text": "[" + "1," * 600 + "1]"})
    assert caught.value.rule == "input_too_large"


def test_csv_with_a_header_gives_objects() -> None:
    out = call("data.csv.parse", {"text": 'name,qty\nbolt,3\n"nut, hex",\n'})
    assert out == {
        "columns": ["name", "qty"],
        "rows": [{"name": "bolt", "qty": "3"}, {"name": "nut, hex", "qty": ""}],
        "truncated": False,
    }


def test_csv_without_a_header_gives_lists_and_respects_max_rows() -> None:
    out = call(
        "data.csv.parse", {"text": "a;b\nc;d\n", "delimiter": ";", "header": False, "max_rows": 1}
    )
    assert out == {"columns": [], "rows": [["a", "b"]], "truncated": True}


def test_query_selects_with_jmespath() -> None:
    data = {"items": [{"name": "a", "price": 5}, {"name": "b", "price": 20}]}
    assert call("data.query", {"data": data, "expression": "items[?price > `10`].name"}) == {
        "result": ["b"]
    }


def test_an_invalid_expression_is_an_input_error() -> None:
    with pytest.raises(InputValidationError) as caught:
        call("data.query", {"data": {}, "expression": "items[?"})
    assert caught.value.code is ErrorCode.INPUT_INVALID
    assert caught.value.errors[0].path == "expression"


def test_transform_maps_nests_and_inserts_literals() -> None:
    data = {"user": {"first": "Ada", "last": "Lovelace", "tags": ["x", "y"]}}
    mapping = {
        "name": "user.first",
        "meta": {"count": "length(user.tags)", "source": {"$literal": "crm"}},
    }
    assert call("data.transform", {"data": data, "mapping": mapping}) == {
        "result": {"name": "Ada", "meta": {"count": 2, "source": "crm"}}
    }


def test_transform_for_each_applies_the_mapping_per_item() -> None:
    data = {"rows": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}
    out = call("data.transform", {"data": data, "mapping": {"key": "id"}, "for_each": "rows"})
    assert out == {"result": [{"key": 1}, {"key": 2}]}


def test_transform_never_evaluates_python() -> None:
    with pytest.raises(InputValidationError) as caught:
        call("data.transform", {"data": {}, "mapping": {"x": "__import__('os').system('id')"}})
    assert caught.value.errors[0].path == "mapping.x"


def test_transform_rejects_non_expression_leaves(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError) as caught:
        call("data.transform", {"data": {}, "mapping": {"x": 3}})
    assert caught.value.errors[0].code == "type"


BIG_CAPS = {c.id: c for c in build_data_capabilities(max_input_bytes=100_000)}
DOUBLINGS = {
    "shared": ("|".join(["[@, @]"] * 60), 1),
    "flattened": ("|".join(["[@, @][]"] * 60), [1]),
    "joined": ("|".join(["join('', [@, @])"] * 60), "ab"),
    "stringified": ("to_string(" + "|".join(["[@, @]"] * 60) + ")", 1),
    "reprojected": ("|".join(["[@, @][]"] * 14 + ["[*]"] * 200), [1]),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", sorted(DOUBLINGS))
def test_an_expression_that_doubles_its_value_is_refused_at_the_cap(name: str) -> None:
    expression, data = DOUBLINGS[name]
    cap = BIG_CAPS["data.query"]
    assert cap.handler is not None
    with pytest.raises(SandboxRefusalError) as caught:
        cap.handler(**cap.validate_inputs({"data": data, "expression": expression}))
    assert caught.value.rule == "query_too_large"
    assert caught.value.code is ErrorCode.EXECUTION_REFUSED


@pytest.mark.timeout(20)
def test_transform_leaves_share_one_cap() -> None:
    cap = BIG_CAPS["data.transform"]
    assert cap.handler is not None
    leaf = "|".join(["[@, @]"] * 15)  # 32k leaves: under the cap alone, not a hundred times
    mapping = {f"k{i}": leaf for i in range(100)}
    with pytest.raises(SandboxRefusalError) as caught:
        cap.handler(**cap.validate_inputs({"data": 1, "mapping": mapping}))
    assert caught.value.rule == "query_too_large"


def test_queries_over_data_larger_than_the_cap_still_run() -> None:
    data = {"items": [{"name": f"n{i}", "tags": ["x"] * 5} for i in range(200)]}
    assert call("data.query", {"data": data, "expression": "length(items[].name)"}) == {
        "result": 200
    }
    assert call("data.transform", {"data": data, "mapping": {"all": "@"}})["result"]["all"] == data


def test_an_expression_nested_too_deeply_is_an_input_error() -> None:
    with pytest.raises(InputValidationError) as caught:
        call("data.query", {"data": 1, "expression": "(" * 3000 + "@" + ")" * 3000})
    assert caught.value.errors[0].code == "depth"


@pytest.mark.timeout(20)
def test_a_wide_header_over_many_empty_rows_is_refused_not_padded_into_billions_of_cells() -> None:
    text = ",".join(f"c{i}" for i in range(10_000)) + "\n" * 9_000  # 9e7 cells from 68 kB
    cap = BIG_CAPS["data.csv.parse"]
    assert cap.handler is not None
    with pytest.raises(SandboxRefusalError) as caught:
        cap.handler(**cap.validate_inputs({"text": text}))
    assert caught.value.rule == "table_too_large"
    assert caught.value.details["size"] == 8_999 * 10_000  # the first newline ends the header


def test_short_rows_under_a_header_are_still_padded_with_null() -> None:
    assert call("data.csv.parse", {"text": "a,b,c\n1\n"})["rows"] == [
        {"a": "1", "b": None, "c": None}
    ]


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", '{"a": -Infinity}', "[1e999]", "-1e400", "1" * 5000]
)
def test_json_that_python_would_stretch_is_an_input_error(text: str) -> None:
    cap = BIG_CAPS["data.json.parse"]
    assert cap.handler is not None
    with pytest.raises(InputValidationError) as caught:
        cap.handler(**cap.validate_inputs({"text": text}))
    assert caught.value.errors[0].path == "text"
    assert caught.value.errors[0].code == "json"


def test_json_text_that_starts_with_a_byte_order_mark_is_refused_and_says_so() -> None:
    cap = BIG_CAPS["data.json.parse"]
    assert cap.handler is not None
    with pytest.raises(InputValidationError) as caught:
        cap.handler(**cap.validate_inputs({"text": "\ufeff[1]"}))
    assert caught.value.errors[0].code == "json"
    assert "BOM" in caught.value.message


def test_one_decoder_parses_many_documents_alike() -> None:
    cap = BIG_CAPS["data.json.parse"]
    assert cap.handler is not None
    for text, value in (("[1]", [1]), ('{"a": 1.5}', {"a": 1.5}), ("null", None), ('"x"', "x")):
        assert cap.handler(**cap.validate_inputs({"text": text}))["value"] == value
