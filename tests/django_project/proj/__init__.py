"""Celery's Django layout: the app is loaded with Django (``proj/__init__.py``)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
