"""The workers a look-up expects to answer: those that answered this app's recent look-ups.

Kept in one small JSON file per broker, control exchange and key prefix under the user's
state directory (``$XDG_STATE_HOME/chordguard/workers``), so a new ``chordguard`` process
knows them too. Only host names and times are written (never a URL); a worker not heard
from for ``FORGET_AFTER`` seconds is no longer expected. Unwritable: nothing is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from celery import Celery

from ...config import STATE_DIR

ROSTER_DIR = STATE_DIR / "chordguard" / "workers"
FORGET_AFTER = 300.0  # seconds: a worker silent this long (stopped, scaled down) is forgotten


def expected(app: Celery) -> set[str]:
    """Host names that answered a look-up of this app in the last ``FORGET_AFTER`` seconds."""
    return set(_recent(_path(app)))


def remember(app: Celery, answered: Iterable[str]) -> None:
    """Record that these workers answered just now."""
    path = _path(app)
    seen = {**_recent(path), **dict.fromkeys(answered, time.time())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
            json.dump(seen, out)
        os.replace(out.name, path)
    except OSError:
        pass  # a read-only home: look-ups wait out their timeout, as with no roster


def _path(app: Celery) -> Path:
    conf = app.conf
    prefix = (conf.broker_transport_options or {}).get("global_keyprefix")
    identity = json.dumps([str(conf.broker_url or ""), conf.control_exchange, prefix],
                          default=str)
    return ROSTER_DIR / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.json"


def _recent(path: Path) -> dict[str, float]:
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    now = time.time()
    return {host: when for host, when in seen.items() if isinstance(host, str)
            and isinstance(when, int | float) and now - when < FORGET_AFTER} \
        if isinstance(seen, dict) else {}
