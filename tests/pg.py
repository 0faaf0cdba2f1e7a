"""PostgreSQL for tests: the server ``./dev test`` starts, and a fresh schema per user.

``./dev test`` runs ``scripts/postgres.sh start`` and exports PULLKV_TEST_POSTGRES_URL. Without
it (pytest run directly) PostgreSQL tests skip, saying how to run them; under CI=true they
fail instead, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest

URL_ENV = "PULLKV_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test server's URL; skips the test (fails it under CI=true) when there is none."""
    url = os.environ.get(URL_ENV)
    if url:
        return url
    reason = (
        f"{URL_ENV} is not set: run the suite with ./dev test, or start PostgreSQL with "
        f'`scripts/postgres.sh start` and export {URL_ENV}="$(scripts/postgres.sh url)"'
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests must run under CI=true, but {reason}")
    pytest.skip(reason)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with the connection's search_path set to ``schema`` (libpq ``options``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema(prefix: str = "t") -> Iterator[str]:
    """A store URL on a new, empty schema of the test database; dropped afterwards."""
    base = postgres_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


ENGINES = ("sqlite", "postgresql")


@contextmanager
def store_args(engine: str) -> Iterator[list[str]]:
    """Server arguments that put a server on ``engine``: nothing for SQLite (the data folder's
    file), ``--store URL`` on a fresh schema for PostgreSQL."""
    if engine == "sqlite":
        yield []
    elif engine == "postgresql":
        with fresh_schema("srv") as url:
            yield ["--store", url]
    else:
        raise AssertionError(f"unknown engine {engine}")


def parametrize_server(metafunc: pytest.Metafunc) -> None:
    """For a module's ``pytest_generate_tests``: run its tests that use ``server`` on every
    engine (one server per engine for the module)."""
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", ENGINES, indirect=True, scope="module")
