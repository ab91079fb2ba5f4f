"""Apps for ``chordguard doctor`` tests, importable as ``-A tests.doctor_apps:NAME``.

``seed`` carries the configuration printed in the seed guide, read from the guide itself
(its configuration block, kept verbatim in tests/fixtures) so the test checks exactly what
it recommends.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
SEED_GUIDE = Path(os.environ.get("CG_SEED_GUIDE",
                                 ROOT / "tests" / "fixtures" / "seed_guide_configuration.txt"))
BROKER = os.environ.get("CG_TEST_REDIS", "redis://127.0.0.1:6379/0")


def seed_configuration() -> str:
    """The guide's ``app.conf.update(...)`` block, verbatim."""
    text = SEED_GUIDE.read_text()
    match = re.search(r"app\.conf\.update\(\n.*?^\)", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise RuntimeError(f"no app.conf.update(...) block in {SEED_GUIDE}")
    return match.group(0)


def seed_app() -> Celery:
    app = Celery("seed-guide", broker=BROKER, backend=BROKER)
    exec(seed_configuration(), {"app": app})  # the guide's own text, a trusted test input
    return app


def clean_app() -> Celery:
    app = Celery("clean", broker=BROKER, backend=BROKER)
    app.conf.update(worker_send_task_events=True, task_send_sent_event=True,
                    task_time_limit=600, task_soft_time_limit=540, result_expires=86400)

    @app.task(name="clean.callback", shared=False)
    def callback(results):
        return len(results)

    return app


seed = seed_app()
clean = clean_app()
