"""The verdict never vouches for in-flight chords whose holdings it could not fully see, and
judges each chord on its own: one whose parts are all accounted for needs no more of the view."""

from __future__ import annotations

from datetime import UTC, datetime

from chordguard.model import Chord, ChordKind, ClusterFacts, HeaderPart, Snapshot, SourceReport
from chordguard.monitor.api import verdict
from chordguard.monitor.sources.holdings import unseen


def snapshot(complete: bool, *chords: Chord, source: str = "redis_chords") -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(now, "5.x", ClusterFacts(now, holdings_complete=complete), list(chords),
                    [SourceReport(source, True, 0.1)])


def test_a_chord_resting_on_what_was_not_seen_makes_the_verdict_unknown():
    resting = Chord(id="g", kind=ChordKind.REDIS, unseen="unread queue(s): q")
    accounted = Chord(id="h", kind=ChordKind.REDIS)
    status, reason = verdict(snapshot(False, accounted, resting))
    assert status == "unknown" and "g" in reason and "unread queue" in reason
    assert verdict(snapshot(False, accounted))[0] == "healthy"
    assert verdict(snapshot(False))[0] == "healthy"  # nothing in flight: nothing unseen


def test_unlock_chords_need_a_complete_view():
    """A chord_unlock chord is found only through its messages: an unread queue may hide one."""
    assert verdict(snapshot(False, source="unlock"))[0] == "unknown"
    assert verdict(snapshot(True, source="unlock"))[0] == "healthy"


def test_unseen_only_for_parts_nobody_accounts_for():
    facts = ClusterFacts(datetime.now(UTC), consumed_queues={"q"}, queued={"b": "q"})
    chord = Chord(id="g", kind=ChordKind.REDIS, total=2, done=1, unaccounted=0)
    assert unseen(chord, facts, ["unread queue(s): q"]) is None
    chord.unaccounted = 1
    assert "1 part(s) seen nowhere" in unseen(chord, facts, ["unread queue(s): q"])
    assert unseen(chord, facts, []) is None  # a complete look: lost_header decides
    polled = Chord(id="u", kind=ChordKind.UNLOCK, header=[
        HeaderPart("a", "SUCCESS"), HeaderPart("b", "PENDING"), HeaderPart("c", "PENDING",
                                                                          held_by="worker:w")])
    assert unseen(polled, facts, ["inspect active: timeout"]) is None
    polled.header.append(HeaderPart("d", "PENDING"))
    assert unseen(polled, facts, ["inspect active: timeout"]) is not None
    blind = ClusterFacts(datetime.now(UTC), consumed_queues=None, queued={"b": "q"})
    assert "whether it is consumed" in unseen(polled, blind, [])
