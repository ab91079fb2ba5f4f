"""ONE resolver for chordguard's configuration: the store URL and every ``chordguard_*`` setting.

Each value comes from, in order: an explicit argument (``install(app, store=…)``,
``--store``), the app's configuration (``chordguard_<name>``, or ``CHORDGUARD_<NAME>`` as
Django's ``CELERY_`` namespace leaves it), the environment (``CHORDGUARD_STORE``), the
default. A ``sentinel://`` store URL gets its Redis master's name here when it does not say
it (``with_master_name``). The guard, durable chords, the monitor, the dashboard, the CLI
and the periodic check all ask here, so they all find the same store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from celery import Celery

from ._urls import mask_url
from .errors import ConfigurationError
from .store.backends import canonical
from .store.protocols import DEFAULT_RETENTION
from .store.timeouts import Timeouts
from .store.timeouts import configure as configure_timeouts
from .store.timeouts import from_environment as timeouts_from_environment

STATE_DIR = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
DEFAULT_STORE = f"sqlite:///{STATE_DIR / 'chordguard' / 'chordguard.sqlite'}"  # per user, any cwd
STORE_ENV = "CHORDGUARD_STORE"
DEFAULT_OUTAGE_SETTLE = 30.0


def setting(app: Celery | None, name: str) -> Any:
    """``chordguard_<name>`` from the app's configuration (either case), or None."""
    if app is None:
        return None
    conf = app.conf
    for key in (f"chordguard_{name}", f"CHORDGUARD_{name.upper()}"):
        value = conf.get(key)
        if value is not None:
            return value
    return None


def configured_store(app: Celery | None = None, explicit: str | None = None) -> str | None:
    """The store someone asked for (argument, app configuration, environment), or None;
    ``postgres://``/``postgresql://`` come back with their driver (``store.backends.canonical``)."""
    url = explicit or setting(app, "store") or os.environ.get(STORE_ENV) or None
    return with_master_name(canonical(url), app) if url else None


def with_master_name(url: str, app: Celery | None) -> str:
    """A ``sentinel://…`` store URL with ``?master_name=`` added when it has none: from
    ``chordguard_store_transport_options``, else from ``result_backend_transport_options``
    when the result backend is on Sentinel too (where Celery reads it). Any other URL as is.
    """
    if not url.startswith("sentinel://") or app is None or any(
            "master_name" in dict(parse_qsl(urlsplit(part).query)) for part in url.split(";")):
        return url
    name = (setting(app, "store_transport_options") or {}).get("master_name")
    if not name and str(app.conf.result_backend or "").startswith("sentinel://"):
        name = (app.conf.result_backend_transport_options or {}).get("master_name")
    if not name:
        return url
    joiner = "&" if urlsplit(url.rsplit(";", 1)[-1]).query else "?"
    return url + joiner + urlencode({"master_name": name})


def store_url(app: Celery | None = None, explicit: str | None = None) -> str:
    """The store to use: ``configured_store``, else the default SQLite file."""
    return configured_store(app, explicit) or DEFAULT_STORE


def default_store_exists() -> bool:
    """Does the default SQLite file exist here (a guard may have written to it)?"""
    return sqlite_path(DEFAULT_STORE).exists()


def store_identity(url: str) -> str:
    """How workers and the CLI compare stores: the masked URL, a SQLite file made absolute
    (a relative one depends on the current directory)."""
    path = sqlite_path(url)
    return mask_url(url) if path is None else f"sqlite:///{path.resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` store URL, or None for any other store."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url.removeprefix("sqlite:///").split("?")[0])


GUARD_ATTRIBUTE = "_chordguard_guard"  # where install(app) keeps the guard on the app
PRESENCE_COMMAND = "chordguard_presence"  # guarded workers answer it: their store, host, pid


def installed_settings(app: Celery) -> Settings | None:
    """The settings of the guard installed in ``app``, or None (read side: no guard import)."""
    guard = app.__dict__.get(GUARD_ATTRIBUTE)
    return None if guard is None else guard.settings


@dataclass(frozen=True)
class Settings:
    """Every knob of the guard, in seconds unless said otherwise."""

    store: str
    deadline: float = 6 * 3600.0  # default per chord; override with ``with_deadline``
    unlock_max_interval: float = 30.0  # cap of the unlock poll backoff
    lost_header_grace: float = 60.0  # a PENDING header older than this may be lost_header
    breaker_failures: int = 5  # K callback failures ...
    breaker_window: float = 300.0  # ... within this window open the breaker
    breaker_cooldown: float = 60.0  # open -> half-open probe after this
    reaper_interval: float = 10.0  # how often a worker looks for chords past deadline
    flush_interval: float = 1.0  # finished parts are written in batches this often
    retention: float = DEFAULT_RETENTION  # ended chords are kept this long

    def __repr__(self) -> str:  # never print the store's password
        values = ", ".join(f"{f.name}={mask_url(v) if f.name == 'store' else v!r}"
                           for f in fields(self) for v in [getattr(self, f.name)])
        return f"Settings({values})"


def resolve(app: Celery, **explicit: Any) -> Settings:
    """Settings for ``app``; ``explicit`` values (not None) win over configuration.

    Raises ConfigurationError for an unknown name or a value that is not a positive number.
    """
    unknown = set(explicit) - {f.name for f in fields(Settings)}
    if unknown:
        raise ConfigurationError(f"unknown guard setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {"store": store_url(app, explicit.get("store"))}
    for spec in fields(Settings):
        value = explicit.get(spec.name)
        if value is None:
            value = setting(app, spec.name)
        if value is None or spec.name == "store":
            continue
        number = _positive(spec.name, value)
        values[spec.name] = int(number) if spec.name == "breaker_failures" else number
    return Settings(**values)


def store_timeouts(app: Celery | None) -> Timeouts:
    """Client timeouts for store connections: ``chordguard_store_connect_timeout`` and
    ``chordguard_store_timeout`` (seconds) from the app, else the environment
    (``CHORDGUARD_STORE_CONNECT_TIMEOUT``, ``CHORDGUARD_STORE_TIMEOUT``), else 3 s and 10 s.
    Raises ConfigurationError for a value that is not a positive number."""
    base = timeouts_from_environment()
    values = {}
    for name, attribute in (("store_connect_timeout", "connect"), ("store_timeout", "operation")):
        value = setting(app, name)
        values[attribute] = getattr(base, attribute) if value is None else _positive(name, value)
    return Timeouts(**values)


def apply_store_timeouts(app: Celery | None) -> Timeouts:
    """Make ``store_timeouts(app)`` the timeouts of this process's new store connections."""
    chosen = store_timeouts(app)
    configure_timeouts(chosen)
    return chosen


FAN_INS = ("celery", "store")


def fan_in(app: Celery | None, explicit: str | None = None) -> str:
    """How the guard joins the app's chords: ``"celery"`` (the result backend's own join,
    the default) or ``"store"`` (chordguard's store barrier: docs/fan-in.md), from
    ``install(app, fan_in=…)``, else ``chordguard_fan_in`` (``CELERY_CHORDGUARD_FAN_IN``
    under Django). Raises ConfigurationError for any other value."""
    value = explicit if explicit is not None else setting(app, "fan_in")
    value = FAN_INS[0] if value is None else str(value).strip().lower()
    if value not in FAN_INS:
        raise ConfigurationError(f"chordguard_fan_in must be one of {', '.join(FAN_INS)}, "
                                 f"not {value!r}")
    return value


def outage_settle(app: Celery | None) -> float:
    """Seconds a reaper waits after it regains sight of its store before it judges
    deadlines and stalls again (``chordguard_outage_settle``, default 30): long enough for
    the completions workers kept during the outage to land."""
    value = setting(app, "outage_settle")
    return DEFAULT_OUTAGE_SETTLE if value is None else _positive("outage_settle", value)


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"chordguard_{name} must be a number, not {value!r}") from exc
    if not number > 0 or number == float("inf"):
        raise ConfigurationError(f"chordguard_{name} must be a positive number, not {value!r}")
    return number
