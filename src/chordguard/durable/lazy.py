"""Header results by reference: a read-only sequence that pages envelopes from the store.

A chord with many parts hands its callback ``{"__chordguard_results__": id}`` instead of a
list; the callback's worker swaps in a ``LazyResults`` before the callback runs, so neither
the last header's worker nor the callback's ever holds every result at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from ..store import Barriers
from .barrier import Policy, callback_arg

REFERENCE_KEY = "__chordguard_results__"
PAGE = 1000


def reference(barrier_id: str) -> dict[str, str]:
    return {REFERENCE_KEY: barrier_id}


def referenced_id(value: Any) -> str | None:
    """The barrier id if ``value`` is a results reference."""
    if isinstance(value, dict) and len(value) == 1 and REFERENCE_KEY in value:
        return str(value[REFERENCE_KEY])
    return None


class LazyResults(Sequence):
    """Header results in header order, fetched ``page`` at a time (one page cached)."""

    def __init__(self, store: Barriers, barrier_id: str, total: int, policy: Policy,
                 page: int = PAGE) -> None:
        self.store, self.barrier_id, self.total, self.policy = store, barrier_id, total, policy
        self.page = page
        self._start, self._values = 0, []  # type: tuple[int, list[Any]]

    def __len__(self) -> int:
        return self.total

    def _load(self, start: int) -> None:
        envelopes = self.store.envelopes(self.barrier_id, start,
                                         min(start + self.page, self.total))
        self._start, self._values = start, [callback_arg(e, self.policy) for e in envelopes]

    def _item(self, index: int) -> Any:
        if index < 0:
            index += self.total
        if not 0 <= index < self.total:
            raise IndexError(index)
        if not self._start <= index < self._start + len(self._values):
            self._load(index - index % self.page)
        return self._values[index - self._start]

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(self.total))]
        return self._item(index)

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self.total, self.page):
            self._load(start)
            yield from self._values

    def __repr__(self) -> str:
        return f"<LazyResults of durable chord {self.barrier_id}: {self.total} parts>"
