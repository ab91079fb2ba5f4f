"""The guard's settings from install() and app.conf (either case, Django's namespace), and
its task patterns: split_results, header_task. No workers and no store needed here."""

from __future__ import annotations

import pydantic
import pytest
from celery import Celery

import chordguard
from chordguard.config import fan_in, resolve
from chordguard.errors import ConfigurationError


def test_settings_come_from_install_then_app_conf_either_case(tmp_path):
    app = Celery("settings-test")
    app.conf.update(CHORDGUARD_DEADLINE="120", chordguard_breaker_failures=3,
                    chordguard_store=f"sqlite:///{tmp_path}/s.sqlite")
    settings = resolve(app, unlock_max_interval=5)
    assert (settings.deadline, settings.breaker_failures, settings.unlock_max_interval) == \
        (120.0, 3, 5.0)
    assert settings.store.endswith("s.sqlite")
    django = Celery("django-style")

    class DjangoSettings:
        CELERY_CHORDGUARD_STORE = "redis://127.0.0.1:6379/0"
        CELERY_CHORDGUARD_DEADLINE = 99

    django.config_from_object(DjangoSettings, namespace="CELERY")
    assert (resolve(django).store, resolve(django).deadline) == ("redis://127.0.0.1:6379/0", 99)
    with pytest.raises(ConfigurationError, match="chordguard_deadline"):
        resolve(app, deadline="soon")
    with pytest.raises(ConfigurationError, match="unknown guard setting"):
        resolve(app, dedline=3)


class Files(pydantic.BaseModel):
    successful_files: int


def test_split_results_sorts_failures_from_successes():
    envelope = {"status": "failed", "error": "x", "type": "OSError", "task_id": "t1"}
    successes, failures = chordguard.split_results(
        [{"successful_files": 2}, None, envelope, {"successful_files": "many"}], schema=Files)
    assert successes == [Files(successful_files=2)]
    assert [f["type"] for f in failures] == ["NoneResult", "OSError", "ValidationError"]
    assert chordguard.split_results(None)[1][0]["type"] == "NoneResult"


def test_header_task_retries_then_returns_an_envelope_never_a_bare_none():
    app = Celery("header-task-test", set_as_current=False)
    calls = []

    @chordguard.header_task(app=app, autoretry_for=(OSError,), max_retries=2,
                            default_retry_delay=0)
    def flaky(n) -> dict:
        calls.append(n)
        raise OSError("disk gone")

    @chordguard.header_task(app=app)
    def nothing() -> dict:
        return None

    result = flaky.apply(args=(1,))  # Celery's own eager run, retries included
    assert len(calls) == 3
    assert result.result == {"status": "failed", "error": "disk gone", "type": "OSError",
                             "task_id": result.id}
    assert nothing.apply().result["type"] == "NoneResult"


def test_every_part_of_chordguard_resolves_the_same_store(tmp_path, monkeypatch):
    """install(), a Django-style app without install(), the CLI, the dashboard and the
    monitor's sources all ask config.store_url / configured_store: one answer."""
    from chordguard.config import configured_store, store_url
    from chordguard.monitor.store_view import store_view

    url = f"sqlite:///{tmp_path}/one.sqlite"
    guarded = Celery("guarded", broker="memory://", backend="cache+memory://")
    assert chordguard.install(guarded, store=url).settings.store == url

    class DjangoSettings:
        CELERY_CHORDGUARD_STORE = url

    django = Celery("django-style")
    django.config_from_object(DjangoSettings, namespace="CELERY")
    for app in (guarded, django):
        assert store_url(app) == configured_store(app) == url
        assert store_view(app).store.url == url  # the dashboard's view
    monkeypatch.setenv("CHORDGUARD_STORE", url)  # the CLI with --broker only, no app config
    assert store_url(Celery("from-urls")) == url
    monkeypatch.delenv("CHORDGUARD_STORE")
    assert configured_store(Celery("bare")) is None and store_url(Celery("bare")).startswith(
        "sqlite:///")


def test_fan_in_comes_from_install_then_app_conf_either_case():
    app = Celery("fan-in-config", set_as_current=False)
    assert fan_in(app) == "celery"
    app.conf.CHORDGUARD_FAN_IN = "Store"  # Django's CELERY_ namespace leaves it upper case
    assert fan_in(app) == "store"
    assert fan_in(app, "celery") == "celery"
    app.conf.chordguard_fan_in = "barrier"
    with pytest.raises(ConfigurationError, match="chordguard_fan_in must be one of"):
        fan_in(app)
