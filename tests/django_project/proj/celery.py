"""``proj/celery.py`` as Celery's Django guide writes it, with the guard installed at import."""

import os

from celery import Celery

import chordguard

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
if os.environ.get("CG_GUARD", "1") == "1":
    chordguard.install(app)
