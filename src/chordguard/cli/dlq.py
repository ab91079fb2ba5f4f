"""``chordguard dlq list | show ID | replay ID | drop ID --reason TEXT``: the dead-letter queue.

The store is ``--store URL``, else the app's ``chordguard_store`` (``-A proj`` with the guard
installed), else ``CHORDGUARD_STORE``, else the default SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.panel import Panel
from rich.table import Table

from .._timeouts import within
from .._urls import mask_text
from ..actions.dead_letters import drop, replay, waiting
from ..config import sqlite_path, store_url
from ..errors import NoStoreError, UnreachableError
from ..model import to_jsonable
from ..store import Store, open_store, unavailable_errors
from ..store.records import DLQ_DEAD, DeadLetter
from . import COMMANDS, EXIT_OK, EXIT_PROBLEMS, FiniteFloat, command, settings

T = TypeVar("T")
STORE_TIMEOUT = 10.0
LETTERS: list[click.Command] = []
STORE = click.option("--store", "store", metavar="URL",
                     help="The guard's store (default: the app's chordguard_store).")


def _store(url: str | None) -> Store:
    """The store to read, never created here: a SQLite file that does not exist yet holds
    nothing (NoStoreError says where it was looked for)."""
    opts = settings()
    app = opts.app if (opts.app_path or opts.celery_app is not None) and not url else None
    resolved = store_url(app, url)
    backing = open_store(resolved)
    path = sqlite_path(resolved)
    if path is not None and not path.exists():
        raise NoStoreError(f"no store at {backing.describe()}: nothing has been recorded there "
                           "(give --store URL, or -A with the guard installed)")
    return backing


def _call(backing: Store, fn: Callable[..., T], *args: Any) -> T:
    """One store call, bounded in time; a store that is down is a one-line error."""
    try:
        return within(STORE_TIMEOUT, "store", fn, *args)
    except unavailable_errors() as exc:
        first = mask_text(str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnreachableError(f"store {backing.describe()} unreachable: "
                               f"{first or type(exc).__name__}") from exc


def _when(stamp: float | None) -> str:
    return "" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


@command(LETTERS, name="list")
@STORE
@click.option("--all", "everything", is_flag=True, help="Replayed and dropped letters too.")
def list_letters(store: str | None, everything: bool) -> int:
    """Dead letters waiting (newest first); exit 1 when any is waiting."""
    opts = settings()
    try:
        backing = _store(store)
    except NoStoreError as exc:
        if opts.json:
            opts.emit_json({"schema": "chordguard.dlq/1", "store": None, "dead_letters": []})
        else:
            opts.console.print(f"[green]no dead letters[/]: {exc}")
        return EXIT_OK
    letters = _call(backing, backing.dead_letters, None if everything else DLQ_DEAD)
    if opts.json:
        opts.emit_json({"schema": "chordguard.dlq/1", "store": backing.describe(),
                        "dead_letters": to_jsonable(letters)})
    elif not letters:
        opts.console.print(f"[green]no dead letters[/] in {backing.describe()}")
    else:
        table = Table("id", "state", "created (UTC)", "callback", "chord", "reason",
                      title=f"Dead letters — {backing.describe()}", title_justify="left")
        for letter in letters:
            table.add_row(letter.id, letter.state, _when(letter.created_at),
                          letter.callback_name or "?", letter.chord_id, letter.reason)
        opts.console.print(table)
    return EXIT_PROBLEMS if any(letter.state == DLQ_DEAD for letter in letters) else EXIT_OK


@command(LETTERS, name="show")
@STORE
@click.argument("letter_id")
def show(store: str | None, letter_id: str) -> int:
    """One dead letter: why, its inputs and the traceback."""
    opts = settings()
    backing = _store(store)
    letter = _call(backing, _find, backing, letter_id)
    if opts.json:
        opts.emit_json({"schema": "chordguard.dlq/1", "dead_letter": to_jsonable(letter)})
        return EXIT_OK
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in (("id", letter.id), ("state", letter.state), ("chord", letter.chord_id),
                       ("callback", letter.callback_name or "?"), ("app", letter.app),
                       ("created (UTC)", _when(letter.created_at)), ("reason", letter.reason),
                       ("error", letter.error or ""), ("note", letter.note or "")):
        facts.add_row(key, value)
    opts.console.print(facts)
    opts.console.print(Panel(json.dumps(letter.inputs, indent=2, default=repr),
                             title="inputs (what the callback was or would have been given)"))
    if letter.traceback:
        opts.console.print(Panel(letter.traceback.rstrip(), title="traceback"))
    return EXIT_OK


def _find(backing: Store, letter_id: str) -> DeadLetter:
    letter = backing.dead_letter(letter_id)
    if letter is None:
        waiting(backing, letter_id)  # raises the named error
    assert letter is not None
    return letter


@command(LETTERS, name="replay")
@STORE
@click.argument("letter_id")
@click.option("--wait", "wait", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="Seconds to wait for the replayed callback's result.")
def replay_letter(store: str | None, letter_id: str, wait: float) -> int:
    """Run the letter's callback once more with its stored inputs (after the fix)."""
    opts = settings()
    app = opts.app
    backing = _store(store)
    outcome = _call(backing, replay, app, backing, letter_id)
    code = EXIT_OK
    if wait:
        result = app.AsyncResult(outcome["task_id"])
        try:
            outcome["result"] = within(wait + 1, "result backend", result.get, timeout=wait,
                                       propagate=True)
            outcome["outcome"] = "SUCCESS"
        except Exception as exc:
            outcome["outcome"], outcome["error"] = result.state, repr(exc)
            code = EXIT_PROBLEMS
    if opts.json:
        opts.emit_json({"schema": "chordguard.dlq/1", "replayed": outcome})
    else:
        opts.console.print(f"replayed {outcome['id']}: {outcome['callback']} as task "
                           f"{outcome['task_id']}" + (f" -> {outcome['outcome']}"
                                                      if "outcome" in outcome else ""))
    return code


@command(LETTERS, name="drop")
@STORE
@click.argument("letter_id")
@click.option("--reason", required=True, help="Why it is dropped (kept on record).")
def drop_letter(store: str | None, letter_id: str, reason: str) -> int:
    """Settle a dead letter without replaying it; the record and the reason stay."""
    opts = settings()
    backing = _store(store)
    outcome = _call(backing, drop, backing, letter_id, reason)
    if opts.json:
        opts.emit_json({"schema": "chordguard.dlq/1", "dropped": outcome})
    else:
        opts.console.print(f"dropped {outcome['id']}: {reason}")
    return EXIT_OK


@click.group("dlq")
def dlq() -> None:
    """The guard's dead-letter queue: list, show, replay, drop."""


for _command in LETTERS:
    dlq.add_command(_command)
COMMANDS.append(dlq)
