"""The guard's settings: ``install()`` arguments, else ``app.conf.chordguard_*``, else defaults.

Upper-case keys (``CHORDGUARD_*``, as Django's ``CELERY_`` namespace leaves them) are read too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from celery import Celery

from ..errors import ConfigurationError
from ..store import DEFAULT_RETENTION, store_url
from ..urls import mask_url


@dataclass(frozen=True)
class GuardSettings:
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
        return f"GuardSettings({values})"


def conf_value(app: Celery, name: str) -> Any:
    """``chordguard_<name>`` from the app's configuration (either case), or None."""
    conf = app.conf
    for key in (f"chordguard_{name}", f"CHORDGUARD_{name.upper()}"):
        value = conf.get(key)
        if value is not None:
            return value
    return None


def resolve(app: Celery, **explicit: Any) -> GuardSettings:
    """Settings for ``app``; ``explicit`` values (not None) win over configuration."""
    values: dict[str, Any] = {}
    for spec in fields(GuardSettings):
        value = explicit.get(spec.name)
        if value is None:
            value = conf_value(app, spec.name)
        if value is None:
            continue
        if spec.name == "store":
            values["store"] = str(value)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"chordguard_{spec.name} must be a number, "
                                     f"not {value!r}") from exc
        if number <= 0:
            raise ConfigurationError(f"chordguard_{spec.name} must be positive, not {value!r}")
        values[spec.name] = int(number) if spec.name == "breaker_failures" else number
    unknown = set(explicit) - {f.name for f in fields(GuardSettings)}
    if unknown:
        raise ConfigurationError(f"unknown guard setting(s): {', '.join(sorted(unknown))}")
    values["store"] = store_url(app, values.get("store"))
    return GuardSettings(**values)
