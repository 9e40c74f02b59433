"""``database_url`` for PostgreSQL: aifr's ``schema=`` comes out, the rest reaches libpq as written."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from aifr.app import postgres_target


@pytest.mark.parametrize(
    ("url", "dsn", "schema"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql://u:p@db:5432/app", None),
        ("postgresql://db/app?schema=tenant_a", "postgresql://db/app", "tenant_a"),
        (
            "postgresql://db/app?sslmode=require&schema=s&application_name=w1",
            "postgresql://db/app?sslmode=require&application_name=w1",
            "s",
        ),
        (
            "postgres:///app?host=/run/postgresql&schema=s",
            "postgres:///app?host=/run/postgresql",
            "s",
        ),
        ("postgresql://db/app?schema=a%2Db", "postgresql://db/app", "a-b"),
        ("postgresql://db/app?schema=", "postgresql://db/app", None),
    ],
)
def test_the_schema_parameter_is_taken_out_and_the_rest_kept_verbatim(
    url: str, dsn: str, schema: str | None
) -> None:
    assert postgres_target(url) == (dsn, schema)


def test_a_unix_socket_url_still_names_its_socket_directory_for_libpq() -> None:
    target = postgres_target("postgresql:///test?host=%2Fvar%2Frun%2Fpostgresql&schema=x")

    assert target is not None
    assert conninfo_to_dict(target[0]) == {"dbname": "test", "host": "/var/run/postgresql"}


def test_other_urls_are_not_postgresql() -> None:
    assert postgres_target("sqlite:///.aifr/aifr.db") is None
    assert postgres_target("mysql://db/app") is None
