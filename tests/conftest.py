"""Test fixtures: a real Postgres (the embedded server, or DATABASE_URL's), one template
database with every migration applied, cloned per test."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from common.store import db, migrate

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"


def _template_name() -> str:
    digest = hashlib.sha256()
    for m in migrate.discover():
        digest.update(m.name.encode() + m.checksum.encode())
    return f"oculus_test_tpl_{digest.hexdigest()[:12]}"


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the test server (any database on it; tests create their own)."""
    return db.server_url()


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> str:
    """Returns the name of a template database holding every migration, made once."""
    name = _template_name()
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(74201)")
        try:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %(n)s AND datistemplate", {"n": name}
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                with db.connect(db.with_database(pg_server_url, name), autocommit=True) as tpl:
                    migrate.apply(tpl)
                conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH is_template true").format(sql.Identifier(name))
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(74201)")
    return name


@pytest.fixture
def new_db(pg_server_url: str, template_db: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh migrated databases (URLs); all dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"oculus_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template_db)
                )
            )
        made.append(name)
        return db.with_database(pg_server_url, name)

    try:
        yield make
    finally:
        for name in made:
            _drop(pg_server_url, name)


@pytest.fixture
def db_url(new_db: Callable[[], str]) -> str:
    """A fresh migrated database for one test; dropped afterwards."""
    return new_db()


@pytest.fixture
def conn(db_url: str) -> Iterator[db.Conn]:
    """An autocommit connection (dict rows) to the test's own database."""
    with db.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """An empty database (no migrations) for one test."""
    name = f"oculus_empty_{uuid.uuid4().hex[:12]}"
    db.ensure_database(pg_server_url, name)
    try:
        yield db.with_database(pg_server_url, name)
    finally:
        _drop(pg_server_url, name)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The real Polymarket payloads in ../shared; the test is skipped without them."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared Polymarket fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES
