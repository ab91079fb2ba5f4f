"""The guard's store on SQLite, PostgreSQL and Redis: journal, CAS decisions, retention;
settings from install() and app.conf; input normalisation. No workers needed here."""

from __future__ import annotations

import time
import uuid

import pydantic
import pytest
from celery import Celery

import chordguard
from chordguard.errors import ConfigurationError
from chordguard.guard.settings import resolve
from chordguard.store import open_store
from chordguard.store.records import (
    DLQ_DEAD,
    DLQ_DROPPED,
    FAILED,
    SUCCEEDED,
    ChordRecord,
    DeadLetter,
    PartUpdate,
)
from tests.guard_support import store_urls


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store(request, tmp_path):
    return open_store(store_urls(tmp_path)[request.param])


def record(app: str, deadline_in: float = 60) -> ChordRecord:
    now = time.time()
    return ChordRecord(id=str(uuid.uuid4()), app=app, kind="unlock", callback_name="t.cb",
                       callback_id=str(uuid.uuid4()), header_ids=["a", "b", "c"],
                       created_at=now, deadline_at=now + deadline_in,
                       callback={"task": "t.cb", "options": {}})


def test_journal_counts_parts_once_and_ends_a_chord_once(store):
    app = "app-" + uuid.uuid4().hex
    chord, late = record(app), record(app, deadline_in=-1)
    store.record_chord(chord)
    store.record_chord(late)
    store.record_chord(chord)  # publishing twice keeps the first record
    now = time.time()
    store.record_parts([PartUpdate(chord.id, "a", "SUCCESS", now),
                        PartUpdate(chord.id, "b", "FAILURE", now + 1)])
    store.record_parts([PartUpdate(chord.id, "a", "SUCCESS", now + 2)])  # redelivered part
    found = store.chord(chord.id)
    assert (found.done, found.failed) == (2, 1)
    assert found.last_progress_at == pytest.approx(now + 1, abs=0.01)
    assert store.parts(chord.id) == {"a": "SUCCESS", "b": "FAILURE"}
    assert {c.id for c in store.open_chords(app=app)} == {chord.id, late.id}
    assert [c.id for c in store.open_chords(app=app, due_before=time.time())] == [late.id]
    assert store.finish_chord(chord.id, SUCCEEDED, "callback succeeded")
    assert not store.finish_chord(chord.id, FAILED, "reaper")  # someone else already won
    assert store.chord(chord.id).state == SUCCEEDED
    assert [c.id for c in store.open_chords(app=app)] == [late.id]


def test_lease_moves_only_from_the_expected_token(store):
    chord_id = str(uuid.uuid4())
    assert store.swap_lease(chord_id, None, "t1", 60)
    assert not store.swap_lease(chord_id, None, "other", 60)  # a second first message
    assert store.swap_lease(chord_id, "t1", "t2", 60)
    assert not store.swap_lease(chord_id, "t1", "t3", 60)  # a redelivered older message
    assert store.lease_holder(chord_id) == "t2"


def test_claims_dead_letters_and_breakers(store):
    key = "run:" + uuid.uuid4().hex
    assert store.claim(key, "task-1") is None
    assert store.claim(key, "task-2") == "task-1"
    letter = DeadLetter(id=uuid.uuid4().hex[:16], chord_id="c", app="a", callback_name="t.cb",
                        callback={"task": "t.cb"}, reason="callback_failed", error="TypeError()",
                        traceback="tb", inputs=[None, {"n": 1}], created_at=time.time())
    store.add_dead_letter(letter)
    assert store.dead_letter(letter.id[:10]).inputs == [None, {"n": 1}]
    assert letter.id in {d.id for d in store.dead_letters(state=DLQ_DEAD)}
    assert store.settle_dead_letter(letter.id, DLQ_DROPPED, "bad input")
    assert not store.settle_dead_letter(letter.id, DLQ_DROPPED, "twice")
    assert store.dead_letter(letter.id).note == "bad input"
    name = "t.cb-" + uuid.uuid4().hex
    for at in (1.0, 2.0):
        store.update_breaker(name, lambda b, at=at: (b.failures.append(at), b)[1])
    assert store.breaker(name).failures == [1.0, 2.0]
    assert name in {b.name for b in store.breakers()}


def test_retention_purges_ended_chords_on_sql(tmp_path):
    store = open_store(store_urls(tmp_path)["sqlite"], retention=10)
    old, live = record("a"), record("a")
    for r in (old, live):
        store.record_chord(r)
    store.finish_chord(old.id, FAILED, "deadline")
    assert store.purge(now_=time.time() + 60) == 1
    assert store.chord(old.id) is None and store.chord(live.id) is not None


def test_settings_come_from_install_then_app_conf_either_case(tmp_path):
    app = Celery("settings-test")
    app.conf.update(CHORDGUARD_DEADLINE="120", chordguard_breaker_failures=3,
                    chordguard_store=f"sqlite:///{tmp_path}/s.sqlite")
    settings = resolve(app, unlock_max_interval=5)
    assert (settings.deadline, settings.breaker_failures, settings.unlock_max_interval) == \
        (120.0, 3, 5.0)
    assert settings.store.endswith("s.sqlite")
    django = Celery("django-style")

    class DjangoSettings:
        CELERY_CHORDGUARD_STORE = "redis://127.0.0.1:6379/0"
        CELERY_CHORDGUARD_DEADLINE = 99

    django.config_from_object(DjangoSettings, namespace="CELERY")
    assert (resolve(django).store, resolve(django).deadline) == ("redis://127.0.0.1:6379/0", 99)
    with pytest.raises(ConfigurationError, match="chordguard_deadline"):
        resolve(app, deadline="soon")
    with pytest.raises(ConfigurationError, match="unknown guard setting"):
        resolve(app, dedline=3)


class Files(pydantic.BaseModel):
    successful_files: int


def test_split_results_sorts_failures_from_successes():
    envelope = {"status": "failed", "error": "x", "type": "OSError", "task_id": "t1"}
    successes, failures = chordguard.split_results(
        [{"successful_files": 2}, None, envelope, {"successful_files": "many"}], schema=Files)
    assert successes == [Files(successful_files=2)]
    assert [f["type"] for f in failures] == ["NoneResult", "OSError", "ValidationError"]
    assert chordguard.split_results(None)[1][0]["type"] == "NoneResult"


def test_header_task_retries_then_returns_an_envelope_never_a_bare_none():
    app = Celery("header-task-test", set_as_current=False)
    calls = []

    @chordguard.header_task(app=app, autoretry_for=(OSError,), max_retries=2,
                            default_retry_delay=0)
    def flaky(n) -> dict:
        calls.append(n)
        raise OSError("disk gone")

    @chordguard.header_task(app=app)
    def nothing() -> dict:
        return None

    result = flaky.apply(args=(1,))  # Celery's own eager run, retries included
    assert len(calls) == 3
    assert result.result == {"status": "failed", "error": "disk gone", "type": "OSError",
                             "task_id": result.id}
    assert nothing.apply().result["type"] == "NoneResult"
