"""The embedded demo cluster's Celery app: no servers, just files.

Broker: kombu's filesystem transport (it supports fanout, so ``inspect`` works; kombu's
SQLAlchemy transport does not). Result backend: ``db+sqlite``. Both live under
``CHORDGUARD_DEMO_DIR``. Used by ``chordguard demo`` and its worker subprocess.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery


def make_demo_app(root: Path) -> Celery:
    broker_dir = root / "broker"
    for sub in ("queue", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    app = Celery("chordguard-demo", broker="filesystem://",
                 backend=f"db+sqlite:///{root / 'results.sqlite'}")
    app.conf.update(
        broker_transport_options={"data_folder_in": str(broker_dir / "queue"),
                                  "data_folder_out": str(broker_dir / "queue"),
                                  "control_folder": str(broker_dir / "control")},
        broker_connection_retry_on_startup=True,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_chord_retry_interval=1.0,
        chordguard_lost_header_grace=3.0,  # production default 60 s; the demo cannot wait
        worker_hijack_root_logger=False,
    )

    @app.task(shared=False, name="demo.square")
    def square(x: int) -> int:
        return x * x

    @app.task(shared=False, name="demo.slow")
    def slow(seconds: float, value: int) -> int:
        time.sleep(seconds)
        return value

    @app.task(shared=False, name="demo.total")
    def total(values: list[int]) -> int:
        return sum(values)

    return app


app = make_demo_app(Path(os.environ.get("CHORDGUARD_DEMO_DIR", "chordguard-demo")).resolve())
