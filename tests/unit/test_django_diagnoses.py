"""django-db chords as the source models them, and the diagnoses of their counter (pure)."""

from datetime import UTC, datetime, timedelta

from chordguard.model import ClusterFacts
from chordguard.monitor.diagnose import diagnose
from chordguard.monitor.sources.django_chords import Result, Row, to_chord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def chord(count: int | None, states: dict[str, str | None], idle: float = 30.0):
    """A chord whose finished parts ended ``idle`` seconds ago; ``count`` None: no row."""
    done = NOW - timedelta(seconds=idle)
    results = {i: Result(s, done - timedelta(seconds=5), done) for i, s in states.items() if s}
    return to_chord(Row("g", list(states), count), results, NOW, [])


def codes(model, complete: bool = True) -> list[str]:
    facts = ClusterFacts(now=NOW, workers=["w"], consumed_queues=set(),
                         holdings_complete=complete)
    return [d.code for d in diagnose(model, facts)]


def test_the_model_reads_counter_progress_and_times():
    model = chord(1, {"a": "SUCCESS", "b": "FAILURE", "c": None})
    assert (model.total, model.done, model.failed, model.counter) == (3, 2, 1, 1)
    assert model.idle.seconds == 30 and model.age.lower_bound and model.age.seconds == 35
    assert [p.state for p in model.header] == ["SUCCESS", "FAILURE", "PENDING"]


def test_a_count_below_the_unfinished_parts_is_counter_mismatch():
    assert "counter_mismatch" in codes(chord(1, {"a": "SUCCESS", "b": None, "c": None}))


def test_a_count_above_the_unfinished_parts_is_counter_mismatch():
    assert "counter_mismatch" in codes(chord(2, {"a": "SUCCESS", "b": None}))


def test_a_matching_count_or_a_recent_part_is_no_mismatch():
    assert "counter_mismatch" not in codes(chord(2, {"a": "SUCCESS", "b": None, "c": None}))
    assert "counter_mismatch" not in codes(chord(1, {"a": "SUCCESS", "b": None, "c": None},
                                                 idle=5))


def test_the_row_gone_with_parts_left_is_counter_lost():
    found = codes(chord(None, {"a": "SUCCESS", "b": None}))
    assert "counter_lost" in found and "orphaned_body" not in found


def test_the_row_gone_with_every_part_done_is_orphaned_body_only_when_seen_whole():
    assert "orphaned_body" in codes(chord(None, {"a": "SUCCESS", "b": "SUCCESS"}))
    assert "orphaned_body" not in codes(chord(None, {"a": "SUCCESS", "b": "SUCCESS"}),
                                        complete=False)
    running = chord(None, {"a": "SUCCESS", "b": "SUCCESS"})
    running.callback_held_by = "worker:w1 active"
    assert "orphaned_body" not in codes(running)
