"""Locations: the fast URL split agrees with urllib's, and normalization is what fingerprints need."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aifr.findings.location import _fast_url, _slow_url, normalize_location, target_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HTTPS://Shop.Example.Test:443/a/B?x=1#frag", "https://shop.example.test/a/B?x=1"),
        ("https://shop.example.test", "https://shop.example.test/"),
        ("http://shop.example.test:8080/", "http://shop.example.test:8080/"),
        ("http://shop.example.test.:80/x", "http://shop.example.test/x"),
        ("https://user@Shop.example.test/", "https://user@shop.example.test/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("Legacy.Example.Test:22", "legacy.example.test:22"),
        ("www.asdf.de.", "www.asdf.de"),
        ("  https://a.example.test/  ", "https://a.example.test/"),
    ],
)
def test_locations_normalize_case_default_ports_dots_and_fragments(
    value: str, expected: str
) -> None:
    assert normalize_location(value) == expected


def test_the_parts_of_urls_and_host_port_values() -> None:
    url = target_of("https://Shop.Example.Test/login?next=/")
    assert (url.host, url.port, url.scheme, url.path) == (
        "shop.example.test",
        443,
        "https",
        "/login",
    )
    network = target_of("db.example.test:3306")
    assert (network.url, network.host, network.port) == (None, "db.example.test", 3306)
    assert target_of("not a host/at all").host is None
    assert target_of("http://h.example.test:99999/").port is None


_hosts = st.from_regex(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\.[a-zA-Z]{2,5}){1,2}\.?", fullmatch=True
)
_paths = st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,8}){0,3}", fullmatch=True)
_queries = st.from_regex(r"(\?[A-Za-z0-9=&%/-]{0,10})?", fullmatch=True)


@settings(max_examples=120, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "wss", "ftp"]),
    host=_hosts,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    path=_paths,
    query=_queries,
    fragment=st.sampled_from(["", "#top"]),
)
def test_the_fast_url_split_agrees_with_urllib(
    scheme: str, host: str, port: int | None, path: str, query: str, fragment: str
) -> None:
    netloc = host if port is None else f"{host}:{port}"
    value = f"{scheme}://{netloc}{path}{query}{fragment}"
    fast = _fast_url(value, value)
    slow = _slow_url(value, value)
    assert fast is not None
    assert fast == slow
