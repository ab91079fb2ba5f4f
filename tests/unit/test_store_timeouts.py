"""Store client timeouts come from the settings resolver: app, then environment, then 3/10 s."""

from __future__ import annotations

import pytest
from celery import Celery

from chordguard.config import outage_settle, store_timeouts
from chordguard.errors import ConfigurationError
from chordguard.store import open_store, unreachable
from chordguard.store.sql.engine import _postgres_limits
from chordguard.store.timeouts import Timeouts, configure, from_environment


def test_app_then_environment_then_defaults(monkeypatch):
    monkeypatch.delenv("CHORDGUARD_STORE_TIMEOUT", raising=False)
    monkeypatch.delenv("CHORDGUARD_STORE_CONNECT_TIMEOUT", raising=False)
    app = Celery("timeouts", set_as_current=False)
    assert store_timeouts(app) == Timeouts(connect=3.0, operation=10.0)
    monkeypatch.setenv("CHORDGUARD_STORE_TIMEOUT", "4")
    assert store_timeouts(app).operation == 4.0
    app.conf.chordguard_store_timeout = 2
    app.conf.CHORDGUARD_STORE_CONNECT_TIMEOUT = 0.5
    assert store_timeouts(app) == Timeouts(connect=0.5, operation=2.0)
    assert outage_settle(app) == 30.0
    app.conf.chordguard_store_timeout = "never"
    with pytest.raises(ConfigurationError, match="chordguard_store_timeout must be a number"):
        store_timeouts(app)


def test_postgres_connections_get_statement_and_lock_timeouts():
    configure(Timeouts(connect=1.0, operation=2.5))
    try:
        limits = _postgres_limits()
    finally:
        configure(from_environment())
    assert limits["connect_timeout"] == 1
    assert limits["options"] == "-c statement_timeout=2500 -c lock_timeout=2500"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:7439/0",
                                 "postgresql+psycopg://postgres@127.0.0.1:5469/none"])
def test_a_store_nobody_answers_for_is_unreachable_not_a_bug(url):
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver's error
        open_store(url).clock()
    assert unreachable(caught.value)
    assert not unreachable(ValueError("a bug"))
