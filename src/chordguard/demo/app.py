"""The embedded demo cluster's Celery app: no servers, just files.

Broker: kombu's filesystem transport (it supports fanout, so ``inspect`` works; kombu's
SQLAlchemy transport does not), with atomic message writes. Result backend: ``db+sqlite``.
Both live under ``CHORDGUARD_DEMO_DIR``. Used by ``chordguard demo`` and its worker.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from celery import Celery
from kombu.transport import filesystem
from kombu.utils.json import dumps


class AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, but a message file appears only once fully written.

    kombu creates the ``.msg`` file and then writes it, so a consumer listing the folder in
    between reads an empty file, and the worker's connection dies on the JSON error. The
    partial file's name must not contain ``.<queue>.msg`` either: kombu's ``_get`` takes any
    file whose name does.
    """

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        partial = final.with_name(f".{uuid.uuid4().hex}.part")
        partial.write_text(dumps(payload))
        os.replace(partial, final)


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicFilesystemChannel


def make_demo_app(root: Path) -> Celery:
    broker_dir = root / "broker"
    for sub in ("queue", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    app = Celery("chordguard-demo", broker="filesystem://",
                 backend=f"db+sqlite:///{root / 'results.sqlite'}")
    app.conf.broker_transport = f"{__name__}:AtomicFilesystemTransport"
    app.conf.update(
        broker_transport_options={"data_folder_in": str(broker_dir / "queue"),
                                  "data_folder_out": str(broker_dir / "queue"),
                                  "control_folder": str(broker_dir / "control"),
                                  "polling_interval": 0.1},  # kombu's default: 1 s
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


if os.environ.get("CHORDGUARD_DEMO_DIR"):  # set by ``chordguard demo`` for its worker and CLI
    app = make_demo_app(Path(os.environ["CHORDGUARD_DEMO_DIR"]).resolve())
