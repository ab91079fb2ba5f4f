"""Running a blocking call with a deadline, so an unreachable service never hangs us."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import UnreachableError

T = TypeVar("T")


def within(seconds: float, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """Return ``fn(*args, **kwargs)`` or raise UnreachableError after ``seconds``.

    The call runs in a daemon thread; if it hangs it is abandoned, not waited for.
    Exceptions from ``fn`` propagate unchanged.
    """
    outcome = within_each(seconds, {what: lambda: fn(*args, **kwargs)})[what]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def within_each(seconds: float, calls: dict[str, Callable[[], T]]) -> dict[str, T | BaseException]:
    """Run the calls side by side; each name maps to its value or to the exception it raised.

    A call still running after ``seconds`` maps to an UnreachableError; it is abandoned.
    """
    boxes: dict[str, dict[str, object]] = {}
    threads = []
    for name, fn in calls.items():
        box: dict[str, object] = {}
        boxes[name] = box

        def run(fn=fn, box=box) -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        thread = threading.Thread(target=run, name=f"chordguard:{name}", daemon=True)
        thread.start()
        threads.append(thread)
    end = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    out: dict[str, T | BaseException] = {}
    for name, box in boxes.items():
        if "value" in box:
            out[name] = box["value"]  # type: ignore[assignment]
        elif "error" in box:
            out[name] = box["error"]  # type: ignore[assignment]
        else:
            out[name] = UnreachableError(f"{name} did not answer within {seconds:.0f} s")
    return out
