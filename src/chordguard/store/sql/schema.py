"""Every chordguard table, in one MetaData: created together on first use of a URL.

Journal: ``chordguard_journal`` (one row per chord), ``chordguard_parts`` (finished header
parts), ``chordguard_dead_letters``, ``chordguard_breakers``; every lease (unlock leases,
run-once claims, reaper locks): ``chordguard_lease``; durable chords:
``chordguard_durable_barrier`` (one row per chord), ``chordguard_durable_part`` (one row per
finished part, primary key (barrier, index): a duplicate is a no-op insert),
``chordguard_durable_header`` (header task ids, kept apart so counting never rewrites them).
JSON columns are TEXT holding JSON (the record codec's ``to_row``).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

metadata = MetaData()
journal = Table(
    "chordguard_journal", metadata,
    Column("id", String(155), primary_key=True),
    Column("app", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("callback_name", String(255)),
    Column("callback_id", String(155)),
    Column("header_ids", Text, nullable=False),
    Column("callback", Text),
    Column("created_at", Float, nullable=False),
    Column("deadline_at", Float),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("ended_at", Float),
    Column("polls", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("callback_duplicates", Integer, nullable=False, default=0, server_default="0"),
    Index("chordguard_journal_open", "state", "app", "deadline_at"),
)
parts = Table(
    "chordguard_parts", metadata,
    Column("chord_id", String(155), primary_key=True),
    Column("task_id", String(155), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("at", Float, nullable=False),
)
dead_letters = Table(
    "chordguard_dead_letters", metadata,
    Column("id", String(64), primary_key=True),
    Column("data", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float),
)
leases = Table(  # unlock leases, run-once claims, reaper locks: see protocols.Leases
    "chordguard_lease", metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)
breakers = Table(
    "chordguard_breakers", metadata,
    Column("name", String(255), primary_key=True),
    Column("data", Text, nullable=False),
    Column("version", Integer, nullable=False),
)
barriers = Table(
    "chordguard_durable_barrier", metadata,
    Column("id", String(64), primary_key=True),
    Column("app", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("policy", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("remaining", Integer, nullable=False),
    Column("failed", Integer, nullable=False, default=0),
    Column("by_reference", Integer, nullable=False, default=0),
    Column("callback", Text, nullable=False),
    Column("callback_id", String(64), nullable=False),
    Column("store", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deadline_at", Float, nullable=False),
    Column("stall_seconds", Float, nullable=False),
    Column("due_at", Float),  # NULL once final
    Column("claim_token", String(64)),
    Column("claimed_at", Float),
    Column("reason", Text),
    Column("outcome", Text),
    Column("finished_at", Float),
    Index("chordguard_durable_barrier_due", "app", "due_at"),
    Index("chordguard_durable_barrier_finished", "app", "finished_at"),
)
barrier_parts = Table(
    "chordguard_durable_part", metadata,
    Column("barrier_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("failed", Integer, nullable=False),
    Column("envelope", Text, nullable=False),
)
barrier_headers = Table(
    "chordguard_durable_header", metadata,
    Column("barrier_id", String(64), primary_key=True),
    Column("ids", Text, nullable=False),
)

_created: set[Engine] = set()


def create_tables(engine: Engine) -> None:
    """Create what is missing, once per engine. Threads and processes racing to create them
    too are fine: each failed attempt means another one created a table meanwhile."""
    if engine in _created:
        return
    if not _lacking(_columns(engine)):  # one catalogue query: a process opening a made store
        _created.add(engine)
        return
    for attempt in range(len(metadata.tables) + 1):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            raced = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not raced or attempt == len(metadata.tables):
                raise
    _add_new_columns(engine)
    _created.add(engine)


def _columns(engine: Engine) -> dict[str, set[str]]:
    """Table name -> its columns, for the tables of ``metadata`` the database has."""
    found = inspect(engine).get_multi_columns(filter_names=list(metadata.tables))
    return {name: {c["name"] for c in columns} for (_, name), columns in found.items()}


def _lacking(present: dict[str, set[str]]) -> bool:
    """Is a table or a column of ``metadata`` missing from ``present``?"""
    return any(set(table.columns.keys()) - present.get(table.name, set())
               for table in metadata.tables.values())


def _add_new_columns(engine: Engine) -> None:
    """Columns added since a table was created (each has a server default) are added to it;
    a process racing to add one too is fine."""
    present = _columns(engine)
    for table in metadata.tables.values():
        for column in table.columns:
            if column.name in present.get(table.name, set()):
                continue
            kind = column.type.compile(engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                                      f"{kind} NOT NULL DEFAULT {column.server_default.arg}"))
            except (OperationalError, ProgrammingError) as error:
                if "duplicate" not in str(error).lower() and "exists" not in str(error):
                    raise
