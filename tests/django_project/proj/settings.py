"""Settings of the test project, from ``CG_*`` environment variables (tests/django_project.py).

``CG_DJANGO_DB``: a PostgreSQL database name, or ``sqlite:PATH`` for Django's SQLite default.
``CG_NAMESPACE`` keeps this run's queues, exchanges and Redis keys apart from others.
"""

import os

SECRET_KEY = "chordguard-tests"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_celery_results", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_DB = os.environ.get("CG_DJANGO_DB", "sqlite:db.sqlite3")
if _DB.startswith("sqlite:"):
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                             "NAME": _DB.removeprefix("sqlite:")}}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _DB,
                             "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432}}

_NS = os.environ.get("CG_NAMESPACE", "djangoproj")
CELERY_BROKER_URL = os.environ.get("CG_BROKER", "redis://127.0.0.1:6379/4")
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{_NS}:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = f"cg-{_NS}"
CELERY_CONTROL_EXCHANGE = f"cgctl-{_NS}"
CELERY_EVENT_EXCHANGE = f"cgev-{_NS}"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_CHORDGUARD_STORE = os.environ.get("CG_STORE", "")
CELERY_CHORDGUARD_DEADLINE = float(os.environ.get("CG_DEADLINE", "3600"))
CELERY_CHORDGUARD_REAPER_INTERVAL = float(os.environ.get("CG_REAPER_INTERVAL", "2"))
CELERY_CHORDGUARD_LOST_HEADER_GRACE = float(os.environ.get("CG_LOST_HEADER_GRACE", "60"))
CELERY_TASK_ACKS_LATE = os.environ.get("CG_ACKS_LATE") == "1"
