"""Everything that differs between the Celery versions chordguard supports (5.3 to 5.7).

Other modules ask this one; none of them checks a Celery version or probes with ``hasattr``.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import ChordError

try:  # celery >= 5.6: a ChordError carries the header's exception as its __cause__
    from celery.backends.base import _create_chord_error_with_cause
except ImportError:  # celery 5.3 - 5.5: a bare ChordError
    _create_chord_error_with_cause = None


def chord_error(message: str, cause: BaseException | None = None) -> ChordError:
    """The ``ChordError`` the installed Celery would raise for ``message`` and ``cause``."""
    if _create_chord_error_with_cause is None:
        return ChordError(message)
    return _create_chord_error_with_cause(message=message, original_exc=cause)


def publish_callback(app: Any, callback: Any, results: Any) -> Any:
    """Publish a chord's callback as the installed Celery's chord_unlock does (5.7 retries
    the publish on connection errors; older versions call ``delay`` once)."""
    retry_publish = getattr(app.amqp, "_retry_publish", None)
    if retry_publish is None:
        return callback.delay(results)
    return retry_publish(callback.delay, results)
