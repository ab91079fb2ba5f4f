"""The shop app. With ``CG_GUARD=ready`` the guard is installed in ``ready()``, the other place
Django users put it (``proj/celery.py`` installs it with ``CG_GUARD=1``)."""

import os

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self):
        if os.environ.get("CG_GUARD") == "ready":
            from proj.celery import app

            import chordguard

            chordguard.install(app)
