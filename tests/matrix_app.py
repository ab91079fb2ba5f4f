"""A user's project module, set up as the README shows: configure the app, install the guard
right after (when ``MATRIX_STORE`` is set), then define the tasks.

Celery's default names (queue ``celery``, exchanges ``celery``/``celeryev``), as users have
them; URLs from ``MATRIX_BROKER``, ``MATRIX_BACKEND``. ``tests/integration/test_setup_matrix``
runs its workers (``celery -A tests.matrix_app worker``) and loads it with ``chordguard -A``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import chordguard

app = Celery("proj", broker=os.environ.get("MATRIX_BROKER"),
             backend=os.environ.get("MATRIX_BACKEND"))
app.conf.update(result_chord_retry_interval=1.0, worker_hijack_root_logger=False)
if os.environ.get("MATRIX_STORE"):
    chordguard.install(app, store=os.environ["MATRIX_STORE"])


@app.task(name="m.add")
def add(x, y):
    return x + y


@app.task(name="m.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="m.tsum")
def tsum(values):
    return sum(values)
