"""The store's time on a worker without a round trip per write: this host's clock plus the
offset of the store's clock (``Store.clock``), measured at most once a ``REFRESH``.

While the store is unreachable the last offset measured is kept (none yet: this host's
clock), and the next measurement is tried after ``REFRESH`` again.
"""

from __future__ import annotations

import logging
import time

from .protocols import Store

REFRESH = 60.0
logger = logging.getLogger("chordguard.store")
_offsets: dict[str, tuple[float, float]] = {}  # store URL -> (offset, measured at, monotonic)


def store_now(store: Store) -> float:
    """Now on the store's clock, in epoch seconds (see the module docstring)."""
    found = _offsets.get(store.url)
    if found is None or time.monotonic() - found[1] >= REFRESH:
        offset = found[0] if found else 0.0
        try:
            offset = store.clock() - time.time()
        except Exception as exc:  # any driver's connection error: keep the last offset
            logger.warning("store %s: reading its clock failed (%r)", store.describe(), exc)
        _offsets[store.url] = (offset, time.monotonic())
    return time.time() + _offsets[store.url][0]
