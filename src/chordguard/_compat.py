"""Everything that differs between the Celery versions chordguard supports (5.3 to 5.7), and
the kombu versions they install.

Other modules ask this one; none of them checks a Celery version or probes with ``hasattr``.
Checked against each release's source (5.3.6, 5.4.0, 5.5.3, 5.6.3, 5.7.0) and real runs
(``scripts/compat-matrix``). Same on every supported version, so nothing to switch on:
``inspect``'s ``time_start`` (wall time, converted by ``Request.on_accepted``, and only the
current run's start), ``celery.chord_unlock``'s arguments, ``chord_error_from_stack``,
``backend.group_keyprefix`` (whose building differs, see ``keyprefix_always_separated``).

Readers of Celery's state (monitor, clean) handle every version's keys and rows whatever
Celery is installed where they run: the workers that wrote them may run another version.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import celery
from celery.exceptions import ChordError, NotRegistered
from celery.utils.functional import arity_greater
from kombu import Producer

CELERY = tuple(int(part) for part in celery.__version__.split(".")[:2])
"""The installed Celery's (major, minor)."""
SUPPORTED = ((5, 3), (5, 7))
"""The oldest and newest Celery minor chordguard is tested with."""

try:  # celery >= 5.6: a ChordError carries the header's exception as its __cause__
    from celery.backends.base import _create_chord_error_with_cause
except ImportError:  # celery 5.3 - 5.5: a bare ChordError
    _create_chord_error_with_cause = None

try:  # celery >= 5.7: database results are bytes, optionally compressed
    from celery.backends.base import decompress_payload as _decompress_payload
except ImportError:  # celery 5.3 - 5.6: a PickleType column holding the encoded result
    _decompress_payload = None

REDIS_CHORD_SUFFIXES = (".s", ".j", ".t", ".d", ".c")
"""Every Redis chord key any supported Celery writes: ``.s`` size, ``.j`` finished parts,
``.t`` extra count (all versions); ``.d`` part dedup and ``.c`` dispatch claim (5.7 only).
Read and cleaned all together whatever the installed version."""


@dataclass(frozen=True)
class CeleryFacts:
    """How one Celery minor version treats chords (see the module docstring)."""

    version: tuple[int, ...]

    @property
    def supported(self) -> bool:
        return SUPPORTED[0] <= self.version[:2] <= SUPPORTED[1]

    @property
    def redis_suffixes_written(self) -> tuple[str, ...]:
        """The Redis chord keys this version writes (``.d``/``.c`` from 5.7)."""
        return REDIS_CHORD_SUFFIXES if self.version >= (5, 7) else (".s", ".j", ".t")

    @property
    def redis_parts_deduplicated(self) -> bool:
        """A redelivered header part counts once (5.7); before, twice: the callback can run
        early or twice."""
        return self.version >= (5, 7)

    @property
    def result_chord_expires(self) -> bool:
        """``result_chord_expires`` exists (5.7); before, Redis chord keys expire with
        ``result_expires`` and the setting is ignored."""
        return self.version >= (5, 7)

    @property
    def unlock_give_up_fails_callback(self) -> bool:
        """When ``celery.chord_unlock`` cannot retry (``max_retries`` exhausted, broker
        refusal), 5.7 fails the callback with ChordError; 5.3 - 5.6 leave it PENDING."""
        return self.version >= (5, 7)

    @property
    def nested_chain_failure_propagates(self) -> bool:
        """celery#9674, fixed in 5.7: a task failing inside a chain that is a chord header
        member leaves the chain's last result PENDING and chord_unlock polls forever."""
        return self.version >= (5, 7)

    @property
    def errbacks_reach_header_chords(self) -> bool:
        """5.5+: ``chord.link_error`` also links the errback into each chord nested in the
        header, so Celery runs it when such a chord fails (and leaves the outer body PENDING);
        before, those chords get none."""
        return self.version >= (5, 5)

    @property
    def header_errbacks_reach_chains_with_groups(self) -> bool:
        """With ``task_allow_error_cb_on_chord_header``, a chord with a header chain holding a
        group can be published from 5.4; 5.3 raises AttributeError (``'dict' object has no
        attribute 'clone'``: the chain hands the errback to its chord step as a dict)."""
        return self.version >= (5, 4)

    @property
    def errback_arity_ignores_bound_args(self) -> bool:
        """5.7 tells an old-style ``(request, exc, traceback)`` errback by the arguments the
        failure still supplies; before, any errback task with two or more positional
        parameters is one, even when its signature binds them: it is called in-process with
        the wrong arguments and never runs."""
        return self.version >= (5, 7)

    @property
    def db_results_pickled(self) -> bool:
        """``celery_taskmeta.result`` is a PickleType column (the result pickled) before 5.7,
        the serializer's bytes from 5.7."""
        return self.version < (5, 7)

    @property
    def keyprefix_always_separated(self) -> bool:
        """5.3/5.4 put '_' after every ``global_keyprefix``; 5.5+ only after one not ending
        in ':_-.': workers either side of that upgrade build different Redis keys."""
        return self.version < (5, 5)


INSTALLED = CeleryFacts(CELERY)
"""The facts of the Celery installed here."""
REDIS_CHORD_SUFFIXES_WRITTEN = INSTALLED.redis_suffixes_written
REDIS_PARTS_DEDUPLICATED = INSTALLED.redis_parts_deduplicated
RESULT_CHORD_EXPIRES = INSTALLED.result_chord_expires
UNLOCK_GIVE_UP_FAILS_CALLBACK = INSTALLED.unlock_give_up_fails_callback
NESTED_CHAIN_FAILURE_PROPAGATES = INSTALLED.nested_chain_failure_propagates


def chord_error(message: str, cause: BaseException | None = None) -> ChordError:
    """The ``ChordError`` the installed Celery would raise for ``message`` and ``cause``."""
    if _create_chord_error_with_cause is None:
        return ChordError(message)
    return _create_chord_error_with_cause(message=message, original_exc=cause)


def old_style_errback(app: Any, errback: Any) -> bool:
    """Would the installed Celery call ``errback`` in the process that marks the failure
    (an old-style ``(request, exc, traceback)`` errback), as ``_call_task_errbacks`` tells?
    An errback whose task is not registered here is published instead."""
    try:
        header = getattr(errback.type, "__header__", None)
    except NotRegistered:
        return False
    if header is None or isinstance(header, partial):
        return False
    if INSTALLED.errback_arity_ignores_bound_args:
        return bool(app.backend._errback_arity_greater(errback, 1))
    return bool(arity_greater(header, 1))


def chord_expires(conf: Any) -> Any:
    """The setting that bounds a Redis chord's keys in the installed Celery: a number of
    seconds, a timedelta, or None/0 for never."""
    if RESULT_CHORD_EXPIRES and conf.get("result_chord_expires") is not None:
        return conf.result_chord_expires
    return conf.result_expires


def redis_chord_expires(backend: Any) -> int:
    """Seconds a Redis result backend gives each chord key (0: no expiry)."""
    return int((backend.chord_expires if RESULT_CHORD_EXPIRES else backend.expires) or 0)


def publish_callback(app: Any, callback: Any, results: Any) -> Any:
    """Publish a chord's callback as the installed Celery's chord_unlock does (5.7 retries
    the publish on connection errors; older versions call ``delay`` once)."""
    retry_publish = getattr(app.amqp, "_retry_publish", None)
    if retry_publish is None:
        return callback.delay(results)
    return retry_publish(callback.delay, results)


def publish_batch(producer: Any) -> AbstractContextManager[Any]:
    """Messages published inside the block go out in one pipeline where kombu offers it
    (``Producer.batch``, kombu 5.7+ on a Redis broker: flushed when the block ends, so a
    failure raises there); elsewhere they are published one by one, as before."""
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else nullcontext()


PUBLISH_BATCHES = hasattr(Producer, "batch")
"""Whether the installed kombu publishes a block of messages as one batch."""


def stored_result(raw: bytes | None, decode: Callable[[bytes], Any]) -> Any:
    """The result in a raw ``celery_taskmeta.result`` value, never unpickling code.

    5.7 writes the serializer's bytes (maybe compressed), read with ``decode``; 5.3 - 5.6
    pickle the result itself into the column (PickleType). Both are accepted whichever Celery
    runs here. Raises ``ValueError`` for a pickle of anything but plain values.
    """
    if raw is None:
        return None
    raw = bytes(raw)
    if raw[:1] == b"\x80":  # a pickle (protocol 2+): only plain values are accepted
        try:
            return _PlainUnpickler(io.BytesIO(raw)).load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"not a plain pickle: {exc}") from exc
    return decode(raw if _decompress_payload is None else _decompress_payload(raw))


class _PlainUnpickler(pickle.Unpickler):
    """Loads str/bytes/numbers/containers only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise ValueError(f"refusing to unpickle {module}.{name}")
