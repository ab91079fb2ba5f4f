"""``doctor`` on a django-db app: its hazards, named by the settings a Django project writes."""

from chordguard.monitor.doctor import AppConfig, TaskFacts, lint

BOUNDED = {"result_backend": "django-db", "worker_send_task_events": True,
           "chordguard_deadline": 600.0}


def findings(**config) -> dict:
    return {f.code: f for f in lint(AppConfig(**config))}


def test_django_db_duplicate_parts_and_sqlite_are_named_with_celery_prefixed_settings():
    found = findings(settings={**BOUNDED, "task_acks_late": True, "result_expires": 60},
                     tasks=[TaskFacts("shop.square", acks_late=True)], namespace="CELERY",
                     django_db=True, django_engine="django.db.backends.sqlite3")
    assert found["django_db_duplicate_parts"].setting == "CELERY_TASK_ACKS_LATE"
    assert "shop.square" in found["django_db_duplicate_parts"].summary
    assert found["django_db_sqlite"].setting == "DATABASES"
    assert found["results_expire_before_chord"].setting == "CELERY_RESULT_EXPIRES"


def test_django_db_on_postgresql_without_acks_late_has_no_django_db_finding():
    found = findings(settings=dict(BOUNDED), tasks=[TaskFacts("shop.square")],
                     namespace="CELERY", django_db=True,
                     django_engine="django.db.backends.postgresql")
    assert not {"django_db_duplicate_parts", "django_db_sqlite"} & set(found)


def test_settings_keep_celery_names_without_a_namespace():
    found = findings(settings={**BOUNDED, "task_acks_late": True},
                     tasks=[TaskFacts("shop.square", acks_late=True)], django_db=True)
    assert found["django_db_duplicate_parts"].setting == "task_acks_late"
