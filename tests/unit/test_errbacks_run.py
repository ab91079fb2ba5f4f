"""Which errbacks of a chord's body Celery already ran for a failed part of its header."""

from __future__ import annotations

from celery import Celery, group

from chordguard.guard.errbacks_run import already_run, key, note_parts, without
from chordguard.store.memory import MemoryStore
from chordguard.store.records import ChordRecord, jsonable


def test_an_errback_of_a_failed_nested_chord_body_is_dropped_from_the_outer_body():
    app = Celery("errbacks-run", set_as_current=False)
    errback, other = app.signature("t.note", kwargs={"key": "e"}), app.signature("t.other")
    inner_body = app.signature("t.echo", options={"task_id": "t2"}).on_error(errback)
    inner_body.set(chord=app.signature("t.record"))  # Celery: a part of the outer header
    store = MemoryStore()
    store.record_chord(ChordRecord(id="inner", app="a", kind="redis", callback_name="t.echo",
                                   callback_id="t2", header_ids=[], created_at=0.0,
                                   deadline_at=None, callback=jsonable(dict(inner_body))))
    note_parts(store, "inner", inner_body)
    outer_body = group(app.signature("t.a", options={"task_id": "a"}).on_error(errback)
                       .on_error(other), app.signature("t.b", options={"task_id": "b"}))

    assert already_run(store, {"t2": "SUCCESS", "t3": "FAILURE"}) == set()
    ran = already_run(store, {"t2": "FAILURE"})
    assert ran == {key(errback)}
    kept = without(dict(outer_body), ran)
    assert [key(e) for e in kept["kwargs"]["tasks"][0]["options"]["link_error"]] == [key(other)]
    assert len(outer_body.tasks[0].options["link_error"]) == 2  # the record is left whole


def test_a_chord_that_is_no_header_part_notes_nothing():
    app = Celery("errbacks-run", set_as_current=False)
    store = MemoryStore()
    body = app.signature("t.echo", options={"task_id": "t9"})
    note_parts(store, "top", body)
    assert store.lease_holder("chordguard:part-of:t9") is None
