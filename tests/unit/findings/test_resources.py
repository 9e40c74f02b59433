"""Reading resources a user registers and matching findings and scan targets to them."""

from __future__ import annotations

import pytest

from aifr.errors import ErrorCode, FindingsError
from aifr.findings import ResourceKind
from aifr.findings.resources import (
    Target,
    check_ident,
    match_resource,
    new_resource,
    target_of_url,
)


def test_the_kind_is_guessed_from_the_value_and_normalized() -> None:
    assert new_resource("p", "Shop.Example.Test.").kind is ResourceKind.HOST
    assert new_resource("p", "Shop.Example.Test.").value == "shop.example.test"
    assert new_resource("p", "https://shop.example.test/app").kind is ResourceKind.URL
    assert new_resource("p", "10.1.2.3/24").value == "10.1.2.0/24"
    assert new_resource("p", "git@github.com:acme/shop.git").kind is ResourceKind.REPOSITORY
    assert new_resource("p", "2001:db8::1").kind is ResourceKind.HOST


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("10.0.0.0/33", None),
        ("ftp://files.example.test", ResourceKind.URL),
        ("not a host", None),
        ("", None),
    ],
)
def test_a_value_that_is_not_of_its_kind_is_refused(value: str, kind: ResourceKind | None) -> None:
    with pytest.raises(FindingsError) as info:
        new_resource("p", value, kind=kind)
    assert info.value.code is ErrorCode.FINDINGS_INVALID


def test_a_url_resource_covers_paths_below_it_only_at_a_segment_boundary() -> None:
    app = new_resource("p", "https://shop.example.test/app")
    assert match_resource([app], Target(url="https://shop.example.test/app/login")) == app
    assert match_resource([app], Target(url="https://shop.example.test/app")) == app
    assert match_resource([app], Target(url="https://shop.example.test/application")) is None
    assert match_resource([app], Target(url="http://shop.example.test/app/login")) is None
    assert match_resource([app], Target(url="https://shop.example.test.evil.net/app")) is None


def test_a_cidr_covers_addresses_inside_it_from_the_ip_or_the_host() -> None:
    net = new_resource("p", "10.20.0.0/16")
    assert match_resource([net], Target(host="shop.example.test", ip="10.20.0.5")) == net
    assert match_resource([net], Target(url="https://10.20.3.4:8443/x")) == net
    assert match_resource([net], Target(host="10.21.0.1")) is None


def test_the_narrowest_resource_wins() -> None:
    host = new_resource("p", "shop.example.test")
    url = new_resource("p", "https://shop.example.test/api")
    found = match_resource(
        [host, url], Target(url="https://shop.example.test/api/v1", host="shop.example.test")
    )
    assert found == url
    assert match_resource([host, url], Target(url="https://shop.example.test/")) == host


def test_a_scan_target_is_read_as_a_url_or_a_host() -> None:
    assert target_of_url("https://a.test/x") == Target(url="https://a.test/x", host="a.test")
    assert target_of_url("a.test:8443") == Target(host="a.test")
    assert target_of_url("A.Test") == Target(host="a.test")


@pytest.mark.parametrize("bad", ["bad id", "../x", "a/b", "", "-x", "x" * 129])
def test_an_id_a_user_types_is_checked_before_anything_is_written(bad: str) -> None:
    with pytest.raises(FindingsError) as info:
        check_ident("run", bad)
    assert info.value.code is ErrorCode.FINDINGS_INVALID
    assert info.value.details["field"] == "run"
    with pytest.raises(FindingsError):
        new_resource(bad, "a.test")
