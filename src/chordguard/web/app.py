"""The ``serve`` ASGI app: dashboard pages, a JSON API, actions, ``/metrics`` and ``/healthz``.

Pages are static HTML that poll the JSON API; nothing on them is built from strings of
HTML, so chord results and tracebacks are shown as text, never markup. Every write is a
POST that must carry the token ``serve`` was started with; without one the app is
read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from celery import Celery
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._urls import mask_text
from ..actions import OperatorFail, fail_chord
from ..actions import dead_letters as letters
from ..errors import ChordguardError, DeadLetterError
from ..model import ChordKind, to_jsonable
from ..monitor.collect import collect
from ..monitor.diagnose import CATALOG
from ..monitor.filters import STATES, ChordFilter
from ..monitor.metrics import ChordCollector, exposition, registry_for
from ..monitor.store_view import StoreView, store_view
from ..monitor.tracker import ChordTracker
from ..store import unavailable_errors
from .auth import presented_token, token_matches
from .chords import chord_detail, chord_row
from .forms import BodyTooLarge, body_fields
from .snapshots import SnapshotCache
from .view import SnapshotView

STATIC = files("chordguard.web") / "static"
LIST_LIMIT = 500  # rows of an /api/chords page when no limit is asked for
MAX_LIMIT = 1000  # rows of a page at most
COLLECT_TIMEOUT = 30.0  # seconds each source of a background snapshot may take
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class Dashboard:
    """The state one ``serve`` process shares between requests."""

    def __init__(self, app: Celery, token: str | None, stuck_after_hours: float,
                 cache_seconds: float, refresh_interval: float, collect_timeout: float) -> None:
        self.app, self.token = app, token
        self.tracker = ChordTracker(app)
        self.cache: SnapshotCache[SnapshotView] = SnapshotCache(
            self.produce, fresh_for=cache_seconds, interval=refresh_interval,
            release=SnapshotView.release)
        self.stuck_after_hours, self.collect_timeout = stuck_after_hours, collect_timeout
        self.store: StoreView = store_view(app)
        self.collector = ChordCollector(
            lambda: None if (view := self.cache.latest) is None else view.figures,
            self.store.figures)
        self.registry = registry_for(self.collector)

    def produce(self) -> SnapshotView:
        """Runs in a worker thread: one collection, fed to the tracker, indexed, and its
        metric families built."""
        self.store.refresh()
        figures = self.tracker.observe(collect(self.app, stuck_after_hours=self.stuck_after_hours,
                                               timeout=self.collect_timeout))
        view = SnapshotView(figures)
        self.collector.snapshot_families(figures)
        return view

    def frame(self, view: SnapshotView) -> dict[str, Any]:
        """What every page shows in its header: versions, sources, health, permissions."""
        snapshot = view.figures.snapshot
        return {"taken_at": snapshot.taken_at.isoformat(),
                "celery_version": snapshot.celery_version,
                "health": view.health, "sources": to_jsonable(snapshot.sources),
                "actions_enabled": bool(self.token),
                "dead_letters_enabled": self.store.has_dead_letters}

    async def authorize(self, request: Request) -> JSONResponse | None:
        """None when the request may write; otherwise the refusal to send."""
        if not self.token:
            return _error(403, "read-only: start `chordguard serve` with --token (or "
                               "CHORDGUARD_TOKEN) to allow actions")
        if not token_matches(self.token, await presented_token(request)):
            return _error(401, "missing or wrong token")
        return None


def create_app(app: Celery, token: str | None = None, stuck_after_hours: float = 1.0,
               refresh_interval: float = 15.0, cache_seconds: float = 2.0,
               trusted_hosts: list[str] | None = None,
               collect_timeout: float = COLLECT_TIMEOUT) -> Starlette:
    """The ASGI app. ``trusted_hosts`` limits the Host header (DNS-rebinding defence);
    ``collect_timeout`` bounds each source of a snapshot (one that does not answer in time
    is reported down, and the verdict is unknown)."""
    board = Dashboard(app, token, stuck_after_hours, cache_seconds, refresh_interval,
                      collect_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        board.cache.start_background()
        yield
        await board.cache.stop_background()

    async def chords(request: Request) -> Response:
        view = await board.cache.get()
        wanted = ChordFilter.from_query(request.query_params)
        limit = min(_int(request.query_params.get("limit"), LIST_LIMIT), MAX_LIMIT)
        offset = _int(request.query_params.get("offset"), 0)  # pages: filtered here, not
        matched = view.matching(wanted)  # in the browser
        page = matched[offset:offset + limit]
        rates = view.figures.rates
        return _json({**board.frame(view), "total": len(view.chords),
                      "matched": len(matched), "offset": offset, "limit": limit,
                      "chords": [chord_row(c, rates.get(c.id)) for c in page],
                      "choices": {"kind": [k.value for k in ChordKind], "state": list(STATES),
                                  "diagnosis": sorted(CATALOG)}})

    async def chord(request: Request) -> Response:
        view = await board.cache.get()
        wanted = request.path_params["chord_id"]
        found = view.find(wanted)
        try:
            history = await asyncio.to_thread(board.store.journal, found.id if found else wanted)
        except ChordguardError as exc:
            history = [{"at": None, "event": "journal unreadable", "detail": str(exc)}]
        if found is None and not history:
            return _error(404, "no in-flight chord and no journal record with that group or "
                               "callback id")
        return _json({**board.frame(view), "history": history,
                      "chord": None if found is None else
                      chord_detail(found, view.figures.rates.get(found.id))})

    async def fail(request: Request) -> Response:
        if refusal := await board.authorize(request):
            return refusal
        reason = await _field(request, "reason") or "failed from the chordguard dashboard"
        view = await board.cache.refresh()
        target = view.find(request.path_params["chord_id"])
        if target is None:
            return _error(404, "no in-flight chord with that group or callback id")
        try:
            plan = await asyncio.to_thread(fail_chord, app, target, reason, OperatorFail())
        except ChordguardError as exc:
            return _error(502, mask_text(str(exc)))
        await board.cache.refresh()
        return _json({"ok": True, "plan": to_jsonable(plan)})

    async def dead_letters(request: Request) -> Response:
        view = await board.cache.get()
        try:
            items = await asyncio.to_thread(board.store.dead_letters)
        except ChordguardError as exc:
            return _error(502, str(exc))
        return _json({**board.frame(view), "dead_letters": items})

    async def replay(request: Request) -> Response:
        return await letter_action(request, "replay")

    async def drop(request: Request) -> Response:
        return await letter_action(request, "drop")

    async def letter_action(request: Request, action: str) -> Response:
        if refusal := await board.authorize(request):
            return refusal
        letter = request.path_params["letter_id"]
        reason = await _field(request, "reason")
        if action == "drop" and not reason:
            return _error(400, "dropping a dead letter needs a reason")
        store = getattr(board.store, "store", None)
        try:
            if store is None:
                raise DeadLetterError("no dead-letter queue: the guard's store is not configured")
            if action == "replay":
                outcome = await asyncio.to_thread(letters.replay, board.app, store, letter)
            else:
                outcome = await asyncio.to_thread(letters.drop, store, letter, reason)
        except DeadLetterError as exc:
            return _error(404, str(exc))
        except ChordguardError as exc:
            return _error(502, mask_text(str(exc)))
        except unavailable_errors() as exc:
            return _error(502, f"store {store.describe()}: {mask_text(str(exc))}")
        await board.cache.refresh()
        return _json({"ok": True, "result": outcome})

    async def metrics(_: Request) -> Response:
        await board.cache.get()
        return Response(exposition(board.registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(_: Request) -> Response:
        health = (await board.cache.get()).health
        return _json(health, 200 if health["status"] == "healthy" else 503)

    def page(name: str, title: str):
        html = render_page(name, title)

        async def serve_page(_: Request) -> Response:
            return HTMLResponse(html, headers=SECURITY_HEADERS)
        return serve_page

    routes = [
        Route("/", page("index", "chords")),
        Route("/chords/{chord_id}", page("chord", "chord")),
        Route("/dead-letters", page("dead_letters", "dead letters")),
        Route("/api/chords", chords),
        Route("/api/chords/{chord_id}", chord),
        Route("/api/chords/{chord_id}/fail", fail, methods=["POST"]),
        Route("/api/dead-letters", dead_letters),
        Route("/api/dead-letters/{letter_id}/replay", replay, methods=["POST"]),
        Route("/api/dead-letters/{letter_id}/drop", drop, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)] \
        if trusted_hosts else []
    async def too_large(_: Request, exc: Exception) -> Response:
        return _error(413, str(exc))

    web = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={BodyTooLarge: too_large})
    web.state.dashboard = board
    return web


def render_page(name: str, title: str) -> str:
    """The page shell around ``pages/<name>.html``, loading ``<name>.js``."""
    shell = (STATIC / "shell.html").read_text()
    body = (STATIC / "pages" / f"{name}.html").read_text()
    return shell.replace("{title}", f"chordguard — {title}").replace(
        "{script}", f"{name}.js").replace("{body}", body)


def _json(document: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(document, status, headers=SECURITY_HEADERS)


def _error(status: int, message: str) -> JSONResponse:
    return _json({"ok": False, "error": message}, status)


def _int(value: str | None, default: int) -> int:
    try:
        return max(0, int(value)) if value else default
    except ValueError:
        return default


async def _field(request: Request, name: str) -> str:
    """A field of the POST body, stripped; empty when absent."""
    return (await body_fields(request)).get(name, "").strip()
