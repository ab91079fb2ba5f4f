"""Can the monitor reach the broker, the result backend and chordguard's store?

One bounded probe per place, side by side, before any source reads: a place that is down,
misspelt or refuses the credentials is named once (its masked URL and the error) within
seconds, instead of surfacing as every source's failure or as an incomplete view.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from celery import Celery
from celery.app.backends import BACKEND_ALIASES

from ..._timeouts import within_each
from ..._urls import mask_text, mask_url
from ...config import store_url
from ...coordination import join_of
from ...store import open_store
from .read_backend import read_backend

PROBE_TIMEOUT = 8.0  # seconds: a connection (3 s under appctx.fail_fast) and a cold import
PROBE_ID = "chordguard-reachability-probe"  # a task id nobody uses: read, never written
_NOISE = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def unreachable(app: Celery, places: set[str], timeout: float = PROBE_TIMEOUT,
                ) -> dict[str, str]:
    """Place -> why it cannot be read (its URL and the error), for each of ``places``
    ("broker", "backend", "store") that failed its probe within ``timeout`` seconds."""
    outcomes = within_each(timeout, {p: (lambda p=p: PROBES[p](app)) for p in places})
    return {place: f"{url_of(app, place) or '(not configured)'}: {brief(outcome)}"
            for place, outcome in sorted(outcomes.items())
            if isinstance(outcome, BaseException)}


def url_of(app: Celery, place: str) -> str:
    """The masked URL of a place (one that does not parse: its password masked as text)."""
    url = store_url(app) if place == "store" else str(
        (app.conf.broker_url if place == "broker" else app.conf.result_backend) or "")
    try:
        return mask_url(url)
    except ValueError:
        return mask_text(url)


def brief(error: BaseException) -> str:
    """One line: the error's first line without SQLAlchemy's link, passwords masked."""
    text = _NOISE.sub("", str(error)).strip().splitlines()
    first = text[0].strip() if text else ""
    return mask_text(first or type(error).__name__)


def _broker(app: Celery) -> None:
    with app.connection_for_read() as connection:  # one attempt, whatever the app's retries
        connection.ensure_connection(max_retries=0)  # connects, authenticates (Redis: PING)


def _backend(app: Celery) -> None:
    try:
        backend = read_backend(app)
    except ImportError as exc:  # Celery imports an unknown scheme as a module
        alias = str(app.conf.result_backend or "").partition("://")[0].partition("+")[0]
        if alias and alias not in BACKEND_ALIASES:
            raise ValueError(f"unknown result backend scheme {alias!r}") from exc
        raise
    if join_of(type(backend)).kind is None:
        return  # nothing reads it: building it is all the monitor does
    if hasattr(backend, "ResultSession"):
        session = backend.ResultSession()
        try:
            session.connection()
        finally:
            session.close()
    else:
        backend.get_task_meta(PROBE_ID)


def _store(app: Celery) -> None:
    open_store(store_url(app)).clock()


PROBES: dict[str, Callable[[Celery], None]] = {
    "broker": _broker, "backend": _backend, "store": _store}
