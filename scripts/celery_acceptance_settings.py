"""Django settings of scripts/celery-acceptance's ``django`` backend: django-celery-results'
``django-db`` on the run's own PostgreSQL database (``CG_ACCEPT_DJANGO_DB``)."""

import os

SECRET_KEY = "chordguard-acceptance"
USE_TZ = True
INSTALLED_APPS = ["django_celery_results"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql",
                         "NAME": os.environ.get("CG_ACCEPT_DJANGO_DB", "cg_accept_django"),
                         "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432}}
