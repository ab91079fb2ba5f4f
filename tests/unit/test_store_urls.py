"""Distributed store URLs: the backend each picks, what a URL that can only fail says (one
line, password masked, before any connection), and where a Sentinel store finds the name of
its master. No service needed: nothing here connects."""

from __future__ import annotations

import pytest
from celery import Celery

from chordguard._urls import mask_url
from chordguard.config import store_identity, store_url
from chordguard.errors import ConfigurationError
from chordguard.store import by_url, open_store
from chordguard.store.backends import canonical
from chordguard.store.redis.store import RedisStore
from chordguard.store.sql.store import SqlStore

PSYCOPG = "postgresql+psycopg://app:s3cret@db.example:5432/jobs?sslmode=require"


def test_cluster_and_sentinel_urls_open_the_redis_store_without_connecting():
    for url in ("redis+cluster://127.0.0.1:1", "rediss+cluster://u:pw@127.0.0.1:1/0",
                "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2/3?master_name=m"):
        assert isinstance(open_store(url), RedisStore)


@pytest.mark.parametrize("url, says", [
    ("redis+cluster://:secret@127.0.0.1:1/2", "a Redis Cluster has only database 0"),
    ("redis+socket://:secret@127.0.0.1:1/0", "a Redis store URL starts with redis://"),
    ("sentinel://:secret@127.0.0.1:1/0", "names no Redis master: add \\?master_name=NAME"),
    ("sentinel://:secret@h:1;redis://h:2/0?master_name=m", "must be sentinel://host:port"),
    ("sentinel://:secret@h:1/zero?master_name=m", "the Redis database must be a number"),
])
def test_a_redis_url_that_can_only_fail_is_refused_in_one_line(url, says):
    with pytest.raises(ConfigurationError, match=says) as error:
        open_store(url).client  # noqa: B018
    assert "secret" not in str(error.value) and "\n" not in str(error.value)


def test_a_sentinel_store_takes_its_master_name_from_the_settings():
    app = Celery("urls", broker="memory://", backend="cache+memory://")
    sentinels = "sentinel://:pw@h1:26379/0;sentinel://h2:26379/0"
    app.conf.chordguard_store = sentinels
    assert store_url(app) == sentinels  # nowhere to take it from: the store says so on use
    app.conf.update(result_backend=sentinels,
                    result_backend_transport_options={"master_name": "celery"})
    assert store_url(app) == sentinels + "?master_name=celery"  # where Celery reads it
    app.conf.chordguard_store_transport_options = {"master_name": "own"}
    assert store_url(app) == sentinels + "?master_name=own"
    assert store_url(app, sentinels + "?db=0&master_name=x") == sentinels + "?db=0&master_name=x"
    assert store_url(app, sentinels + "?db=0") == sentinels + "?db=0&master_name=own"
    assert store_url(app, "redis://h/0") == "redis://h/0"


def test_each_url_of_a_sentinel_list_is_masked():
    assert mask_url("sentinel://:s1@h1:1/0;sentinel://u:s2@h2:2/0") == \
        "sentinel://:**@h1:1/0;sentinel://u:**@h2:2/0"


@pytest.mark.parametrize("written", [
    "postgres://app:s3cret@db.example:5432/jobs?sslmode=require",
    "postgresql://app:s3cret@db.example:5432/jobs?sslmode=require",
    "POSTGRES://app:s3cret@db.example:5432/jobs?sslmode=require",
    PSYCOPG,
])
def test_postgres_urls_as_people_write_them_mean_psycopg_3(written, monkeypatch):
    """``postgres://`` and ``postgresql://`` open the SQL store on psycopg 3 (SQLAlchemy's
    default for ``postgresql://`` is psycopg2, not installed), the same store object as the
    explicit URL; the app's setting and the environment resolve to the explicit URL, so a
    worker and the CLI written either way compare equal. Nothing connects."""
    store = open_store(written)
    assert by_url(written) is SqlStore and isinstance(store, SqlStore) and store.url == PSYCOPG
    assert store is open_store(PSYCOPG)
    app = Celery("pg", broker="memory://", backend="cache+memory://")
    app.conf.chordguard_store = written
    assert store_url(app) == PSYCOPG
    monkeypatch.setenv("CHORDGUARD_STORE", written)
    assert store_url(Celery("env")) == PSYCOPG
    assert store_identity(store_url(app)) == "postgresql+psycopg://app:**@db.example:5432/jobs"


def test_only_postgres_schemes_are_rewritten():
    assert canonical("postgres+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert canonical("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"
    for url in ("sqlite:///p.sqlite", "redis://h/0", "memory://x", "postgres", "mysql://u@h/d"):
        assert canonical(url) == url


def test_an_unknown_store_scheme_names_the_postgres_forms_and_masks_the_password():
    with pytest.raises(ConfigurationError, match="postgresql://") as error:
        open_store("postgress://u:s3cret@h/d")
    assert "s3cret" not in str(error.value)
